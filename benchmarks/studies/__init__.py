"""One-off studies: HM2Rec ablations and first epochs, the ML-1M tie order, learning curves."""
