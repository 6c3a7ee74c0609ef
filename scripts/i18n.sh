#!/bin/sh
# Refresh the message catalogue: extract every msgid, merge it into zh_Hans_CN/messages.po, compile the .mo.
# Translate the new entries in messages.po (msgstr "" or "#, fuzzy"), then run this again; commit both files.
# tests/test_i18n.py fails while any msgid is untranslated or the .mo is older than the .po.
set -eu
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
T=idp_bridge/web/translations
POT="$(mktemp --suffix=.pot)"
trap 'rm -f "$POT"' EXIT
"$PYBABEL" -q extract --project idp-bridge --version 0.1 -F babel.cfg -k _l -k lazy_gettext --no-location --sort-output -o "$POT" .
if [ -f "$T/zh_Hans_CN/LC_MESSAGES/messages.po" ]; then
  "$PYBABEL" update -i "$POT" -d "$T" -l zh_Hans_CN --no-fuzzy-matching --ignore-obsolete
else
  "$PYBABEL" init -i "$POT" -d "$T" -l zh_Hans_CN
fi
"$PYBABEL" compile -d "$T" -l zh_Hans_CN --statistics
# Only the extraction date changed: keep the committed files (no churn in every commit).
PO="$T/zh_Hans_CN/LC_MESSAGES/messages.po"
if git diff --quiet -I '^"POT-Creation-Date: ' -- "$PO" 2>/dev/null; then
  git checkout -q -- "$PO" "${PO%.po}.mo" 2>/dev/null || true
fi
