"""The `fastbp` command (also `python -m fastbp`).

    fastbp demo     the same network trained by fastbp, scikit-learn and PyTorch on bundled data
    fastbp bench    training throughput against the NumPy reference (benchmarks/)
    fastbp config   print fastbp.show_config()
"""

import argparse
import sys

DEMO_DATASETS = ("digits", "breast_cancer", "diabetes")  # fastbp.demo.DATASETS, without its imports


def _demo(args):
    from .demo import run
    run(epochs=args.epochs, n_threads=args.threads, datasets=args.datasets, chart=args.chart,
        torch=not args.no_torch, repeats=args.repeats)


def _bench(args):
    from . import _bench
    _bench.main(configs=args.configs, dtypes=args.dtypes, threads=args.threads,
                n_samples=args.samples, repeats=args.repeats, libraries=args.libraries,
                chart=args.chart)


def _config(args):
    from . import show_config
    show_config()


def _threads(value):
    return None if value == "auto" else int(value)


def _positive(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return number


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fastbp against scikit-learn and PyTorch on bundled data "
                                    "(needs scikit-learn)")
    p.add_argument("--epochs", type=_positive, default=50, help="epochs of every fit")
    p.add_argument("--threads", type=_threads, default=None,
                   help="threads of every library (default auto: the usable cores)")
    p.add_argument("--datasets", nargs="+", default=list(DEMO_DATASETS), choices=DEMO_DATASETS)
    p.add_argument("--chart", metavar="PNG", default=None,
                   help="write the learning curves and fit times to this PNG (needs matplotlib)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--repeats", type=_positive, default=3,
                   help="fits of each library per data set (the table gives the median time)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("bench", help="samples/s of fastbp against fastbp.reference")
    p.add_argument("--configs", nargs="+", default=["mnist"], choices=["tiny", "mnist", "deep", "wide"])
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    p.add_argument("--threads", nargs="+", type=_threads, default=[None],
                   help="thread counts to try (auto = OMP_NUM_THREADS or all cores)")
    p.add_argument("--samples", type=int, default=8192, help="samples per epoch")
    p.add_argument("--repeats", type=int, default=5, help="alternating runs per figure")
    p.add_argument("--libraries", nargs="*", default=None, choices=["torch", "sklearn"],
                   help="other libraries to time besides the reference (default: all installed)")
    p.add_argument("--chart", metavar="PNG", default=None,
                   help="write a bar chart of the ratios (needs matplotlib)")
    p.set_defaults(func=_bench)
    p = sub.add_parser("config", help="print the build and runtime configuration")
    p.set_defaults(func=_config)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
