"""The arms of the low-label study (finetune/study.py runs them; finetune/cell_settings.py lists the study keys
each depends on).

Methods (every distilled arm uses the same loop, schedule and init as the others; its batch holds as many
labelled images as ``finetune``'s plus as many pool images):
- ``finetune``: the student trained on the labelled subset alone (the labelled-only baseline);
- ``pooloff``: the distillation loop with no loss on pool images (the like-for-like control);
- ``selftrain``: one generalist teacher (the ``finetune`` student itself: same init, same schedule) labels the
  pool; a student is distilled from it;
- ``meanteacher``: no experts; an EMA of the student labels the pool on weak views, the student learns on strong
  views (Cutout, CutMix, intensity);
- ``cosup``: specialists (bone groups, ``groups``) start from the generalist and fine-tune on the labelled images;
  their targets, denoised by the ``selftrain`` student (the previous round's), teach a new student;
- ``cosupmt``: ``cosup``'s specialists (the same files: trained once, in the ``cosup`` cell) and denoising under
  ``meanteacher``'s EMA teacher: the pool target blends
  the specialists' targets (share ``kd.expert_blend`` of ``blend_args``, fading to 0 over the run) with the EMA
  teacher's, so the student starts from co-supervision and its teacher keeps improving;
- ``cosupgate``: ``cosup`` where a bone's specialist targets are used only if the specialist beat the generalist
  by ``gate_folds``-fold cross-validation on the labelled images (cosup/gate.py); the generalist labels the rest;
- ``bcp``: bidirectional copy-paste (Bai et al., CVPR 2023): an EMA teacher labels the pool, labelled and pool
  images swap a box both ways, and the student starts from the ``finetune`` student (BCP's warm start);
- ``bcp2``, ``bcp3``: further BCP rounds: student and EMA teacher start from the previous round's student
  (``bcp``, then ``bcp2``), which thus labels the pool at the start; the same schedule again each round;
- ``bcpfp``: ``bcp`` plus UniMatch's feature perturbation (``fp_args``: a second decoder stream on dropped-out
  encoder features learns the teacher's pixels too), from the same warm start;
- ``meanteacher2``: a second mean-teacher round: student and EMA teacher start from the ``meanteacher`` student,
  the same schedule again (about 2x ``meanteacher``'s compute: ``cosupmt``'s compute-matched control, since
  ``cosupmt`` spends ~2.2x on the ``selftrain`` denoiser, the specialists and its own student);
- ``cosupmt2``: co-supervision's round 1 on the mean teacher's round 0: the ``meanteacher`` student is the
  generalist the specialists start from, the previous round's student that routes and denoises their targets, and
  the init of the student and its EMA teacher, which learn as ``cosupmt`` does (``blend_args``). About
  ``meanteacher2``'s compute (plus the specialists' ``steps.experts`` each): its compute-matched control;
- ``pooloff2``: ``bcp2``'s control: the same second round from the ``bcp`` student with no loss on pool images, so
  ``bcp2 - pooloff2`` is what the pool adds in round two, not the extra steps;
- ``pooloff2mt``: ``meanteacher2``'s control, the same way: the second round from the ``meanteacher`` student with no
  loss on pool images (``meanteacher2 - pooloff2mt``: what the pool adds in the second mean-teacher round).
"""

METHODS = ("pooloff", "selftrain", "meanteacher", "meanteacher2", "cosup", "cosupmt", "cosupmt2", "cosupgate", "bcp",
           "bcpfp", "bcp2", "bcp3", "pooloff2", "pooloff2mt")
# a later round starts from this arm's student
PREVIOUS_ROUND = {"bcp2": "bcp", "bcp3": "bcp2", "pooloff2": "bcp", "meanteacher2": "meanteacher",
                  "pooloff2mt": "meanteacher"}
