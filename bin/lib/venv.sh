# Shared by bin/* scripts: find the project root and make sure .venv exists and is current.
# A venv is (re)installed when requirements*.txt or pyproject.toml changed since the last
# install, so a fresh clone needs nothing but Python 3.11. The tooling packages under bin/
# (devkit, benchlib) are installed in editable mode, so they import without path tricks.

PLANO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PLANO_VENV="${PLANO_VENV:-$PLANO_ROOT/.venv}"

ensure_venv() {
  local stamp="$PLANO_VENV/.requirements.sha256"
  local want
  want="$(cat "$PLANO_ROOT"/requirements*.txt "$PLANO_ROOT/pyproject.toml" | sha256sum \
    | cut -d' ' -f1)"
  if [ -x "$PLANO_VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
      && "$PLANO_VENV/bin/python" -c "import devkit" 2>/dev/null; then
    return 0
  fi
  local python="${PYTHON:-python3}"
  echo "setting up $PLANO_VENV (first run installs requirements.txt)..." >&2
  [ -x "$PLANO_VENV/bin/python" ] || "$python" -m venv "$PLANO_VENV"
  "$PLANO_VENV/bin/python" -m pip install --disable-pip-version-check -q \
      -r "$PLANO_ROOT/requirements.txt" >&2
  # The tooling packages (bin/devkit, bin/benchlib), editable. A venv shared from another
  # checkout (PLANO_VENV, as the demo's test does with a copy) keeps pointing at its own.
  if [ "$PLANO_VENV" = "$PLANO_ROOT/.venv" ] \
      || ! "$PLANO_VENV/bin/python" -c "import devkit" 2>/dev/null; then
    "$PLANO_VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
        -e "$PLANO_ROOT" >&2
  fi
  echo "$want" > "$stamp"
}
