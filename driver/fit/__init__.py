"""Fit the softening scale s from DFT labels (`driver fit`)."""
