"""Convert the W-TALC single-file layout to the layout of COLA_SPEC 1.

    python -m cola_fast.data.convert_wtalc FEATURES.npy ANNOT_DIR OUT_ROOT --allow-pickle

See cola_fast.data.wtalc for both layouts and why --allow-pickle is required.
"""
import argparse
import sys
import warnings

from ..cli import ArgumentParser, fail
from .errors import DataError
from .wtalc import convert_wtalc


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m cola_fast.data.convert_wtalc", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", help="W-TALC features .npy (object array of per-video (T, 2048) arrays)")
    p.add_argument("annotations", help="folder with videoname.npy, subset.npy, segments.npy, labels.npy, classlist.npy")
    p.add_argument("out_root", help="output dataset root (must not exist or be empty)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow reading pickled object arrays (unpickling can run code: trusted files only)")
    a = p.parse_args(argv)
    # --allow-pickle is the user's word that the files are trusted. The library's warning
    # (for callers of load_wtalc) would put its two lines before every error message here;
    # the CLI says it in its closing line instead (unpickling has happened by then either way)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="loading pickled W-TALC arrays")
            out = convert_wtalc(a.features, a.annotations, a.out_root, allow_pickle=a.allow_pickle)
    except DataError as e:
        return fail(e)
    except OSError as e:  # a read-only or full output folder
        return fail(f"cannot write {a.out_root}: {e.strerror or e}")
    print(f"wrote {out} (read pickled W-TALC arrays, allowed by --allow-pickle: trusted files only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
