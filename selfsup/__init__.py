"""Stage 1: label-free pretraining of encoders on raw X-rays (lightly methods under Accelerate)."""
