"""What CleanAnchors and SWN cost against the stock Detectron2 models; ``tools/benchmark.py`` is the
command line, whose ``--help`` says what each section measures. Modules: :mod:`.models` (models
with shared initial weights, training batches), the sections :mod:`.training`, :mod:`.inference`
and :mod:`.assignment`, :mod:`.stats` (bootstrap ratio intervals), :mod:`.memory` (peak tensor
memory) and :mod:`.tables` (the Markdown tables)."""
