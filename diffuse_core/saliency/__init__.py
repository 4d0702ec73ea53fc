"""saliency"""
