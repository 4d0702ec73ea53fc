"""Data the project brings or keeps: SynthBrain (generated slices with ground truth), real slice folders for
training, the shipped teaching sets and educators' curated sets."""
