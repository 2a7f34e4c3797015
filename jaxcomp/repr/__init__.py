"""RePr (Ch. 5 of the Brandeis thesis, papers/001): rank, drop, re-introduce filters.

Pure functions on parameter pytrees; the schedule (Algorithm 3) is a training
task's business. A drop event:

  scores = ranking.drop_scores("ortho", params)                 # Eq. 5.1-5.2
  dropped, counts = selection.select_filters(scores, 0.3)       # global, p = 30 %
  m = masks.filter_masks(params, dropped)                       # conv + its BN
  # forward: masks.apply_masks(params, m); updates: chain masks.mask_updates()
  # last and opt_state = masks.set_masks(opt_state, m)

and the re-introduction:

  params = reinit.reinit_filters(params, dropped, key)          # orthogonal to kept
  variables = reinit.reset_bn({"params": params, **collections}, dropped)
  opt_state = masks.reset_optimizer_moments(opt_state, m)
  opt_state = masks.set_masks(opt_state, masks.filter_masks(params, {}))
"""

from jaxcomp.repr import layers, masks, ranking, reinit, selection  # noqa: F401
