"""Stage 3: the segmentation student: distillation, fine-tuning, evaluation, submission, studies."""
