#!/usr/bin/env bash
# Mutation testing of the money paths: change one thing at a time in the code that decides,
# pays and reconciles, run the unit tests, and count the changes they did not notice.
# Long (about an hour per thousand mutants on 2 cores): run it before a release, never in CI.
#
#   bash scripts/mutation.sh                       # every money path
#   bash scripts/mutation.sh policy reconcile      # named parts only
#   bash scripts/mutation.sh --score               # the last results again, without running
#   bash scripts/mutation.sh --alive policy        # only the mutants not killed last time
#   bash scripts/mutation.sh --rest processing     # only the mutants never run (a run cut short)
#   bash scripts/mutation.sh 'bots.work.processing.xǁProcessorǁ_handle__mutmut_*'
#                                                  # mutant-name globs: one function, a few mutants
#
# Parts: policy processing intents leases reconcile amounts masking. Results stay in
# mutants/ (git-ignored): `.venv/bin/mutmut show NAME` shows a surviving mutant's diff.
# Exit status 1 when fewer than 90 % of the mutants run were killed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -A PARTS=(
  [policy]="bots.decide.policy.*"
  [processing]="bots.work.processing.*"
  [intents]="bots.queue.intents.*"
  [leases]="bots.queue.leases.*"
  [reconcile]="bots.reports.reconcile.*"
  [amounts]="bots.intake.extract.x_find_amount__* bots.intake.extract.x__best__*
             bots.intake.extract.x__candidates__*
             bots.intake.extract.x__choice_doubts__* bots.intake.extract.x_parse_amount__*
             bots.intake.extract.x__number_to_decimal__* bots.intake.extract.x__valid_amount__*
             bots.intake.extract.x_currency_code__* bots.intake.extract.x__score__*
             bots.intake.extract.x__better__* bots.intake.extract.x_read_amount__*
             bots.intake.extract.x_amount_doubts__* bots.intake.extract.x__doubts_in__*
             bots.intake.extract.x__doubts_possible__* bots.intake.extract.x__range_possible__*
             bots.intake.extract.x__signed_starts__*"
  [masking]="bots.intake.extract.x_mask_secrets__* bots.intake.extract.x__mask_card_run__*
             bots.intake.extract.x__card_window__* bots.intake.extract.x_luhn_valid__*
             bots.intake.extract.x__mask_iban__* bots.intake.extract.x__iban_valid__*
             bots.intake.extract.x__prefix_covering__*"
)
ORDER=(policy reconcile intents leases amounts masking processing)

score_only=""
only=""
chosen=()
named=()
for arg in "$@"; do
  case "$arg" in
    --score) score_only=1 ;;
    --alive|--rest) only="$arg" ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    bots.*) named+=("$arg") ;;  # a mutant name or glob, as `mutmut results` prints them
    *) [[ -n "${PARTS[$arg]:-}" ]] || { echo "unknown part '$arg' (parts: ${ORDER[*]})" >&2; exit 2; }
       chosen+=("$arg") ;;
  esac
done
[[ ${#chosen[@]} -gt 0 || ${#named[@]} -gt 0 ]] || chosen=("${ORDER[@]}")

globs=("${named[@]}")
for part in "${chosen[@]}"; do
  # shellcheck disable=SC2206 # the globs are for mutmut, not the shell
  set -f; globs+=(${PARTS[$part]}); set +f
done

if [[ -z "$score_only" ]]; then
  bash scripts/setup.sh >/dev/null
  targets=("${globs[@]}")
  if [[ -n "$only" ]]; then  # named mutants: mutmut runs exactly these again
    mapfile -t targets < <(.venv/bin/python scripts/mutation_score.py "$only" "${globs[@]}")
    [[ ${#targets[@]} -gt 0 ]] || { echo "no mutants to run ($only)"; targets=(); }
  fi
  if [[ ${#targets[@]} -gt 0 ]]; then
    # tmp_path on tmpfs: the queue's SQLite commits then cost no disk flush
    export TMPDIR="${TMPDIR:-/dev/shm}"
    .venv/bin/mutmut run --max-children "${MUTATION_JOBS:-2}" "${targets[@]}" \
      | tr '\r' '\n' | grep -v '^\s*$' | tail -n 3
  fi
fi
exec .venv/bin/python scripts/mutation_score.py "${globs[@]}"
