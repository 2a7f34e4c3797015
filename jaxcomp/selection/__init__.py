"""Compression helps: choosing among an image's JPEG versions (paper 003; SPEC Sec. 5).

`jpeg_versions` makes the original plus its Pillow JPEG versions and their
sizes, `classify_versions` runs a classifier on all of them, the selectors
(`highest_rank_select`, `keep_top1`, `keep_top5`, `keep_both`) pick one version
per image, and `selection_report` / `report_markdown` measure accuracy and
compression ratio. The 11-input network is `jaxcomp.models.multi_version`.
"""

from jaxcomp.selection.report import SELECTORS, report_markdown, selection_report
from jaxcomp.selection.selectors import (highest_rank_select, keep_both, keep_top1, keep_top5,
                                         keep_top_k_select, label_ranks, smallest_qualifying)
from jaxcomp.selection.versions import (PNG_COMPRESS_LEVEL, QUALITIES, Versions,
                                        check_qualities, classify_versions, file_sizes,
                                        jpeg_versions)

__all__ = ["PNG_COMPRESS_LEVEL", "QUALITIES", "SELECTORS", "Versions", "check_qualities",
           "classify_versions", "file_sizes", "highest_rank_select", "jpeg_versions", "keep_both",
           "keep_top1", "keep_top5", "keep_top_k_select", "label_ranks", "report_markdown",
           "selection_report", "smallest_qualifying"]
