#!/usr/bin/env bash
# Regenerates fixtures/golden/ from fixtures/trips/ with the current engine. Run only when a
# change to the enrichment is intended, and review the diff before committing it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRIPLINE_REGEN_GOLDEN=1 cargo test -p tripline-enrich --test engine golden -- --nocapture
git --no-pager diff --stat -- fixtures/golden
