#!/usr/bin/env bash
# Mutation testing with mutmut (3.x) of one module against the test files given: slow, for a developer machine, not CI.
# usage: tests/mutation.sh MODULE TEST_FILE...   e.g. tests/mutation.sh pti/tuning.py tests/test_oracles.py
# MUTANTS="GLOB..." runs only the mutants whose names match (mutmut's names: app.x_format_seconds__mutmut_3,
# app.xǁSessionHandlersǁestimate__mutmut_7), e.g. MUTANTS="app.x_format_seconds__mutmut_*" tests/mutation.sh app.py ...
# Runs in a scratch copy of the repository's tracked files (the worktree is left alone); prints mutmut's results and
# the copy's path (rerun `mutmut results` / `mutmut show NAME` there).
set -euo pipefail
module=$1; shift
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d "${TMPDIR:-/tmp}/pti-mutation-XXXXXX")
(cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$work")
cd "$work"
{
  echo "[mutmut]"
  echo "source_paths="; for path in pti editing_directions app.py; do echo "    $path"; done
  echo "only_mutate=$module"
  echo "also_copy="; for path in alignment examples pytest.ini; do echo "    $path"; done
  echo "pytest_add_cli_args_test_selection="; for test in "$@"; do echo "    $test"; done
  echo "pytest_add_cli_args=-p no:cacheprovider -x -q"
} > setup.cfg
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # no thread pools in forked workers; two cores shared anyway
read -r -a selected <<< "${MUTANTS:-}"
nice -n 5 mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "${selected[@]}" > mutmut.log 2>&1 || true
mutmut results --all true > results.txt || mutmut results > results.txt
echo "mutants: $(grep -c ': ' results.txt || true) listed in $work/results.txt"
grep -o ': [a-z ]*$' results.txt | sort | uniq -c
