# Shared by the bench scripts: `run NAME TARGET_S TARGET_MB CMD...` prints the best wall
# time of $runs runs and its peak RSS (GNU time), with the target marked met or MISSED
# ("-" for no target). Needs $out (a scratch directory) and $runs.
run() {
  local name=$1 target_s=$2 target_mb=$3
  shift 3
  local best_s="" best_kb=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %M" -o "$out/time" "$@" >"$out/stdout" 2>"$out/stderr" || {
      echo "bench: $name failed:" >&2
      cat "$out/stderr" >&2
      exit 1
    }
    read -r s kb <"$out/time"
    if [ -z "$best_s" ] || awk -v a="$s" -v b="$best_s" 'BEGIN { exit !(a < b) }'; then
      best_s=$s best_kb=$kb
    fi
  done
  local mb=$((best_kb / 1024)) verdict=""
  if [ "$target_s" != "-" ]; then
    if awk -v s="$best_s" -v t="$target_s" -v m="$mb" -v tm="$target_mb" 'BEGIN { exit !(s <= t && m <= tm) }'; then
      verdict="met (<= ${target_s} s, <= ${target_mb} MB)"
    else
      verdict="MISSED (<= ${target_s} s, <= ${target_mb} MB)"
    fi
  fi
  printf '%-40s %8s s %7s MB  %s\n' "$name" "$best_s" "$mb" "$verdict"
}
