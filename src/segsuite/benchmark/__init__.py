"""Benchmark harness: how close training and inference come to this machine's limit.

    python -m segsuite.benchmark                      # full run, each model at its paper's crop (2-core CPU: ~14 min)
    python -m segsuite.benchmark --crop cpu           # every model at 128x128 (2-core CPU: ~4 min)
    python -m segsuite.benchmark --quick              # tiny smoke run (seconds)
    python -m segsuite.benchmark --models pspnet unet --compile
    # compiled vs eager, the default format:
    python -m segsuite.benchmark --sections models --compile --memory-formats channels_last
    make bench ARGS="--quick"

Sections (`--sections`, default all), one module each:
  peak     measured peak GEMM FLOP/s (2048^3, fp32 and bf16; the faster of `a @ b` and the same
           product as a 1x1 convolution), the denominator of every "% of peak"
  models   per architecture: parameters, GFLOPs/image (torch.utils.flop_counter), training-step and
           inference images/s in fp32 / bf16-mixed, with and without channels_last (and torch.compile
           with --compile), peak memory, achieved FLOP/s as a fraction of the measured peak
  data     per dataset pipeline, one worker: decode+augment+normalise+collate vs decode alone, on
           miniature official trees rewritten at the official image size (built in a temp dir)
  losses   every loss's forward+backward time relative to cross-entropy (distance maps precomputed
           as the workers do), and the training step of the distance-map losses relative to CE
  metrics  metric update time relative to a validation step (and the confusion-matrix kernel)
  loop     the full Lightning training loop (data, loss, metrics, logging calls) vs the bare step
  slide    sliding-window inference vs the same number of whole-window forwards

What is measured (models, datasets, losses) is what `segsuite.catalog` lists. Timings are the best
of `--iters` repetitions after `--warmup` (the least disturbed run on a shared machine). Peak memory:
CUDA `max_memory_allocated`; on CPU the peak resident set size (VmHWM) above the resident size at the
start of the measurement, after resetting the peak through `/proc/self/clear_refs` (falls back to the
`getrusage` maxrss delta where that is not writable). Writes `<out>/benchmark.json` and
`<out>/benchmark.md`.
"""
