"""Train fastbp and fastbp.reference on the same MNIST-shaped random data, in this process,
and print samples/s and their ratio (medians of alternating runs).

    python benchmarks/bench_train.py                      # mnist 784-128-10, batch 32
    python benchmarks/bench_train.py --configs tiny mnist deep --dtypes float32 float64 --threads 1 2

The same runs are available to anyone with the wheel as `fastbp bench`.
"""

from fastbp.__main__ import main

if __name__ == "__main__":
    main(["bench"] + __import__("sys").argv[1:])
