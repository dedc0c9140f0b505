"""Stage 2: co-supervision: expert teachers label the unlabelled pool; assignment and denoising."""
