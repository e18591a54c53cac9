#!/usr/bin/env bash
# Build Flux from source for the matensemble images, and install Snakemake and the plugin.
# One script shared by baseline.def, frontier.def and perlmutter.def: every version and
# commit hash comes from versions.env (next to this script, or $FLUX_VERSIONS).
#
#   build-flux.sh [STAGE...]     (no stage: deps python fetch core sched plugin clean)
#
#   deps    dnf: the build dependencies of flux-core and flux-sched on Rocky Linux 9
#   python  a venv ($FLUX_VENV) from the image's python$PYTHON_VERSION, with uv and the
#           modules the Flux Python bindings need to build (cffi, ply, pyyaml, jsonschema,
#           and setuptools, which flux-core's configure imports)
#   fetch   git clone of the release tags; each must resolve to the pinned commit
#   core    flux-core: autogen, configure, make, install into $FLUX_PREFIX
#   sched   flux-sched (Fluxion): cmake, make, install into $FLUX_PREFIX
#   plugin  Snakemake and the plugin from $MATENSEMBLE_SRC, with uv, at uv.lock's versions
#   clean   remove the source and build trees
#   test    what %test checks: Flux, Fluxion, the bindings, a workflow through Flux on
#           2 ranks, and a GPU job that sees its GPU when GPUs are present
#
# Environment (defaults): FLUX_PREFIX (/opt/flux), FLUX_VENV (/opt/venv), FLUX_SRC
# (/opt/src/flux), MATENSEMBLE_SRC (/opt/src/matensemble), FLUX_CORE_URL and FLUX_SCHED_URL
# (the flux-framework repositories on GitHub), FLUX_JOBS (nproc), FLUX_PYTHON (the venv's
# python; set it to build the bindings for another interpreter).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
versions=${FLUX_VERSIONS:-$here/versions.env}
# shellcheck source=versions.env
. "$versions"

: "${FLUX_CORE_VERSION:?} ${FLUX_CORE_COMMIT:?} ${FLUX_SCHED_VERSION:?} ${FLUX_SCHED_COMMIT:?}"
: "${PYTHON_VERSION:?} ${UV_VERSION:?} ${GCC_TOOLSET_VERSION:?}"
prefix=${FLUX_PREFIX:-/opt/flux}
venv=${FLUX_VENV:-/opt/venv}
src=${FLUX_SRC:-/opt/src/flux}
plugin_src=${MATENSEMBLE_SRC:-/opt/src/matensemble}
core_url=${FLUX_CORE_URL:-https://github.com/flux-framework/flux-core.git}
sched_url=${FLUX_SCHED_URL:-https://github.com/flux-framework/flux-sched.git}
jobs=${FLUX_JOBS:-$(nproc)}
python=${FLUX_PYTHON:-$venv/bin/python}

say() { printf '== build-flux: %s\n' "$*" >&2; }
die() { printf '== build-flux: error: %s\n' "$*" >&2; exit 1; }

stage_deps() {
    # Package lists, for Rocky Linux / RHEL 9, from the pinned release tags' own recipes
    # (recheck them when the pins move):
    #   flux-core src/test/docker/el9/Dockerfile ("Compilers, autotools", "Python",
    #     "Development dependencies"; scripts/install-deps-rpm.sh is an older EL7 list),
    #     without its test, lint and documentation tools (valgrind, clang, sphinx, aspell);
    #   flux-sched scripts/install-deps.sh (the dnf branch) and README.md, and its
    #     src/test/docker/el9/Dockerfile for gcc-toolset-13 (CMakeLists.txt requires gcc >= 12).
    # zeromq, lua-posix and libsodium come from EPEL, several -devel packages from CRB.
    command -v dnf >/dev/null || die "the deps stage needs dnf (Rocky Linux, RHEL, Alma 9)"
    dnf -y install 'dnf-command(config-manager)'
    dnf config-manager --set-enabled crb
    dnf -y install epel-release
    local core=(
        autoconf automake libtool make pkgconfig gcc gcc-c++ git which file diffutils patch
        libsodium-devel zeromq-devel jansson-devel munge-devel ncurses-devel lz4-devel
        sqlite-devel libuuid-devel hwloc-devel lua-devel systemd-devel libarchive-devel
        pam-devel lua lua-posix hwloc jq
    )
    local sched=(
        boost-devel boost-graph libedit-devel yaml-cpp-devel cmake ninja-build
        "gcc-toolset-${GCC_TOOLSET_VERSION}-gcc" "gcc-toolset-${GCC_TOOLSET_VERSION}-gcc-c++"
    )
    # The image's Python, headers included: the bindings are built for it. MPICH: Rocky's
    # build has the MPICH ABI (libmpi.so.12), the one Cray MPICH's lib-abi-mpich provides,
    # so the host MPI can replace it at run time.
    local image=("python${PYTHON_VERSION}" "python${PYTHON_VERSION}-devel" mpich mpich-devel hostname procps-ng)
    dnf -y install --setopt=install_weak_deps=False "${core[@]}" "${sched[@]}" "${image[@]}"
    dnf clean all
}

stage_python() {
    if [ ! -x "$venv/bin/python" ]; then
        say "venv $venv from python$PYTHON_VERSION"
        "python$PYTHON_VERSION" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "uv==$UV_VERSION"
    uv_install cffi ply pyyaml jsonschema setuptools
}

# uv pip install into the venv, at the versions of the repository's uv.lock when it is there.
uv_install() {
    local constraints=()
    mkdir -p "$src"
    if [ -f "$plugin_src/uv.lock" ]; then
        "$venv/bin/uv" export --frozen --project "$plugin_src" --no-default-groups --group dev \
            --no-emit-project --no-hashes --quiet --output-file "$src/constraints.txt"
        constraints=(--constraint "$src/constraints.txt")
    fi
    "$venv/bin/uv" pip install --no-cache --python "$venv/bin/python" "${constraints[@]}" "$@"
}

# clone URL TAG COMMIT DIR: the tag, and nothing else, verified against the pinned commit.
clone() {
    local url=$1 tag=$2 want=$3 dir=$4 got
    rm -rf "$dir"
    git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$tag" "$url" "$dir"
    got=$(git -C "$dir" rev-parse 'HEAD^{commit}')
    [ "$got" = "$want" ] || die "$url $tag is commit $got, versions.env pins $want"
    say "$tag of $url is the pinned commit $want"
}

stage_fetch() {
    mkdir -p "$src"
    clone "$core_url" "v$FLUX_CORE_VERSION" "$FLUX_CORE_COMMIT" "$src/flux-core"
    clone "$sched_url" "v$FLUX_SCHED_VERSION" "$FLUX_SCHED_COMMIT" "$src/flux-sched"
}

stage_core() {
    local pyver
    pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    say "flux-core $FLUX_CORE_VERSION into $prefix, bindings for $python ($pyver)"
    cd "$src/flux-core"
    FLUX_VERSION=$FLUX_CORE_VERSION ./autogen.sh
    ./configure --prefix="$prefix" --disable-docs PYTHON="$python" PYTHON_VERSION="$pyver"
    make -j"$jobs"
    make install
}

stage_sched() {
    say "flux-sched $FLUX_SCHED_VERSION into $prefix"
    local toolset=/opt/rh/gcc-toolset-$GCC_TOOLSET_VERSION/enable
    (
        # gcc-toolset's compilers for Fluxion's C++; its libstdc++ additions are linked
        # statically, so nothing of the toolset is needed at run time.
        if [ -f "$toolset" ]; then
            set +u
            # shellcheck disable=SC1090
            . "$toolset"
            set -u
        fi
        cd "$src/flux-sched"
        echo "$FLUX_SCHED_VERSION" >flux-sched.ver
        PKG_CONFIG_PATH="$prefix/lib/pkgconfig" cmake -S . -B build \
            -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
            -DFLUX_SCHED_VER="$FLUX_SCHED_VERSION" -DBUILD_TESTING=OFF \
            -DPython_EXECUTABLE="$python"
        cmake --build build -j"$jobs"
        cmake --install build
    )
}

stage_plugin() {
    say "Snakemake and the plugin from $plugin_src"
    mkdir -p "$src"
    uv_install snakemake "$plugin_src"
    "$venv/bin/snakemake" --help | grep -q -- --matensemble-backend ||
        die "snakemake does not list the matensemble plugin's settings"
}

stage_clean() {
    rm -rf "$src"
}

# ---------------------------------------------------------------------------------------
# test: run inside the image (apptainer test), or on any machine with flux, python and
# snakemake on PATH. MATENSEMBLE_TEST_GPUS=N declares N GPUs to the test instance on a
# machine without them (the Flux side of the GPU check only).

count_gpus() {
    if [ -n "${MATENSEMBLE_TEST_GPUS:-}" ]; then
        echo "$MATENSEMBLE_TEST_GPUS"
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        nvidia-smi -L | grep -c '^GPU ' || true
    elif command -v rocm-smi >/dev/null && rocm-smi --showid >/dev/null 2>&1; then
        { rocm-smi --showid | grep -o 'GPU\[[0-9]*\]' || true; } | sort -u | wc -l
    else
        echo 0
    fi
}

stage_test() {
    local work gpus
    work=$(mktemp -d)
    cd "$work"
    say "test in $work"
    flux version | grep -q "libflux-core:[[:space:]]*$FLUX_CORE_VERSION" ||
        die "flux is not flux-core $FLUX_CORE_VERSION: $(flux version | tr '\n' ' ')"
    python -c 'import flux, flux.job, flux.resource; print("bindings:", flux.__file__)'
    snakemake --help | grep -q -- --matensemble-backend || die "plugin not found by snakemake"

    # Flux starts on 2 ranks, Fluxion is the scheduler, a 2-task job spans both ranks.
    # shellcheck disable=SC2016 # expanded by the shell inside the instance
    flux start --test-size=2 sh -c '
        flux module list | grep -q sched-fluxion-qmanager || { echo "Fluxion not loaded"; exit 1; }
        flux module list | grep -q sched-fluxion-resource || { echo "Fluxion not loaded"; exit 1; }
        test "$(flux run -N2 -n2 flux getattr rank | sort | tr "\n" " ")" = "0 1 "'

    # A workflow through the plugin and Flux on 2 ranks: 4 one-core jobs, and an MPI
    # program (MPICH, bootstrapped by Flux's PMI) with one rank on each broker.
    command -v mpicc >/dev/null || die "mpicc not found (MPICH)"
    cat >hello.c <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    printf("rank %d of %d\n", rank, size);
    MPI_Finalize();
    return 0;
}
EOF
    mpicc -o hello hello.c
    cat >Snakefile <<'EOF'
rule all:
    input: expand("one/{i}.txt", i=range(4)), "mpi.txt"

rule one:
    output: "one/{i}.txt"
    shell: "echo ${{FLUX_JOB_ID:?not a Flux job}} > {output}"

rule mpi:
    output: "mpi.txt"
    resources: tasks=2, nodes=2
    shell: "./hello >> {output}"
EOF
    flux start --test-size=2 snakemake --executor matensemble -j unlimited \
        --matensemble-backend flux --matensemble-flux-reserve-cores 0
    for i in 0 1 2 3; do
        [ -s "one/$i.txt" ] || die "one/$i.txt missing"
    done
    [ "$(sort mpi.txt | tr '\n' ';')" = "rank 0 of 2;rank 1 of 2;" ] ||
        die "the MPI job did not run as 2 ranks: $(cat mpi.txt 2>/dev/null)"

    gpus=$(count_gpus)
    if [ "$gpus" -gt 0 ]; then
        say "GPU job on 1 of $gpus GPUs"
        cat >Snakefile.gpu <<'EOF'
rule gpu:
    output: "gpu.txt"
    resources: gpu=1
    shell: "echo ${{CUDA_VISIBLE_DEVICES:-}} ${{ROCR_VISIBLE_DEVICES:-}} > {output}"
EOF
        MATENSEMBLE_GPUS_PER_NODE=$gpus matensemble-flux-start --test-size=1 \
            snakemake -s Snakefile.gpu --executor matensemble -j unlimited \
            --matensemble-backend flux --matensemble-flux-reserve-cores 0
        local id
        id=$(awk '{print $1}' gpu.txt)
        [[ $id =~ ^[0-9]+$ ]] && [ "$id" -lt "$gpus" ] || die "GPU job saw '$(cat gpu.txt)'"
        if [ -z "${MATENSEMBLE_TEST_GPUS:-}" ]; then
            if command -v nvidia-smi >/dev/null; then
                nvidia-smi -i "$id" -L
            else
                rocm-smi -d "$id" --showid
            fi
        fi
    else
        say "no GPU visible: GPU check skipped"
    fi
    say "test passed"
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(deps python fetch core sched plugin clean)
for stage in "${stages[@]}"; do
    case $stage in
    deps | python | fetch | core | sched | plugin | clean | test) "stage_$stage" ;;
    *) die "unknown stage '$stage'" ;;
    esac
done
