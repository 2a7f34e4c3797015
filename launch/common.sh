# Shared by the launch scripts (sourced): printing and running commands.

# The command as one line of shell; a word is quoted only when it must be (the
# same words as Python's shlex.quote leaves bare).
show() {
  local out="" w
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=" $w"
    else
      out+=" '${w//\'/\'\"\'\"\'}'"
    fi
  done
  echo "${out# }"
}

# Runs the command, or with dry=1 prints it (show).
run() {
  if [[ "${dry:-0}" -eq 1 ]]; then show "$@"; else "$@"; fi
}
