#!/usr/bin/env bash
# Builds the web UI into dist/, doing what Trunk.toml and web-ui/index.html describe (the
# app, the widget's own smaller bundle with its widget.html, and the CPU fallback's worker
# with its loader shim, all at the wasm-release profile and through wasm-opt -Oz) with the pinned wasm-bindgen CLI and binaryen that
# setup.sh installs. Not Trunk itself: compiling Trunk took 20 of a fresh machine's 42
# minutes to a first page, and one cargo invocation builds both wasm binaries on shared
# dependencies where Trunk ran two. `trunk build` still works for those who have it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v wasm-split-cli >/dev/null || { echo "build-ui: no wasm-split-cli; scripts/setup.sh installs it" >&2; exit 1; }
command -v brotli >/dev/null || { echo "build-ui: no brotli; scripts/setup.sh installs it (Debian's brotli)" >&2; exit 1; }
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
wasm_dir="$target_dir/wasm32-unknown-unknown/wasm-release"
cargo build --target wasm32-unknown-unknown --profile wasm-release \
  -p starling-web-ui --bin starling-web-ui --bin starling-widget \
  -p starling-client --bin starling-cpu-worker >&2

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# `name_of FILE STEM EXT`: the content-hashed name Trunk would give it (filehash = true),
# so a deployment may cache these files for good.
name_of() { echo "$2-$(sha256sum "$1" | cut -c1-16).$3"; }

wasm-bindgen --target web --no-typescript --out-dir "$stage/app" "$wasm_dir/starling-web-ui.wasm"
# The widget is cut in two at its split point (web-ui/src/bin/starling-widget.rs): the card,
# and the engine the card fetches when its visitor presses Start. The cut reads the
# relocations the widget was linked with (web-ui/build.rs) and comes before wasm-bindgen,
# which must then keep the exports the engine's module links against.
wasm-split-cli --out-name starling-widget "$wasm_dir/starling-widget.wasm" "$stage/split" >&2
wasm-bindgen --target web --no-typescript --keep-lld-exports --out-dir "$stage/widget" "$stage/split/starling-widget.wasm"
cp "$stage"/split/split_*.wasm "$stage/split/__wasm_split.js" "$stage/widget/"
wasm-bindgen --target no-modules --no-typescript --out-dir "$stage/worker" "$wasm_dir/starling-cpu-worker.wasm"
for bg in "$stage"/app/*_bg.wasm "$stage"/widget/*.wasm "$stage"/worker/*_bg.wasm; do
  wasm-opt -Oz "$bg" -o "$bg.opt" && mv "$bg.opt" "$bg"
done

rm -rf dist.new && mkdir dist.new
app_wasm="$(name_of "$stage/app/starling-web-ui_bg.wasm" starling-web-ui wasm)"
app_js="$(name_of "$stage/app/starling-web-ui.js" starling-web-ui js)"
css="$(name_of web-ui/style.css style css)"
worker_wasm="$(name_of "$stage/worker/starling-cpu-worker_bg.wasm" starling-cpu-worker wasm)"
worker_js="$(name_of "$stage/worker/starling-cpu-worker.js" starling-cpu-worker js)"
cp "$stage/app/starling-web-ui_bg.wasm" "dist.new/$app_wasm"
cp "$stage/app/starling-web-ui.js" "dist.new/$app_js"
# The widget's files name each other (its JS imports the split loader, which imports the
# JS back and fetches the engine's module), so they share one hash, of all of them.
widget_hash="$(cat "$stage"/widget/* | sha256sum | cut -c1-16)"
widget_wasm="starling-widget-$widget_hash.wasm"
widget_js="starling-widget-$widget_hash.js"
widget_split_js="starling-widget-split-$widget_hash.js"
cp "$stage/widget/starling-widget_bg.wasm" "dist.new/$widget_wasm"
# Only the import's path: the wasm's import object keeps the name the wasm asks for.
sed "s|^import \(.*\) from \"./__wasm_split.js\"|import \1 from \"./$widget_split_js\"|" "$stage/widget/starling-widget.js" >"dist.new/$widget_js"
grep -q "$widget_split_js" "dist.new/$widget_js" || { echo "build-ui: the widget's JS does not import its split loader" >&2; exit 1; }
split_names="s|\"./starling-widget.js\"|\"./$widget_js\"|"
for part in "$stage"/widget/split_*.wasm; do
  name="$(basename "$part" .wasm)"
  name="${name#split_}"
  cp "$part" "dist.new/starling-widget-${name//_/-}-$widget_hash.wasm"
  split_names="$split_names;s|\"./split_$name.wasm\"|\"./starling-widget-${name//_/-}-$widget_hash.wasm\"|"
done
sed "$split_names" "$stage/widget/__wasm_split.js" >"dist.new/$widget_split_js"
if grep -q '"\./split_\|"\./starling-widget\.js"' "dist.new/$widget_split_js"; then
  echo "build-ui: a name in the widget's split loader was not replaced" >&2
  exit 1
fi
cp web-ui/style.css "dist.new/$css"
cp "$stage/worker/starling-cpu-worker_bg.wasm" "dist.new/$worker_wasm"
cp "$stage/worker/starling-cpu-worker.js" "dist.new/$worker_js"
# The worker's entry point keeps a fixed name: the app starts it by that name
# (client-wasm/src/platform/cpu_worker.rs, WORKER_URL).
printf 'importScripts("./%s");wasm_bindgen("./%s");\n' "$worker_js" "$worker_wasm" \
  >dist.new/starling-cpu-worker_loader.js

# `page JS WASM OUT [MODULE]`: web-ui/index.html with its three Trunk links replaced by
# what they build, loading the bundle JS and WASM (and preloading MODULE, which JS
# imports): index.html for the app, widget.html for the widget (the relay serves it at
# /widget).
page() {
  local head_links imported=""
  if [ -n "${4:-}" ]; then
    imported="
    <link rel=\"modulepreload\" href=\"/$4\" crossorigin=\"anonymous\" />"
  fi
  head_links="$(cat <<EOF
    <link rel="stylesheet" href="/$css" />
    <link rel="modulepreload" href="/$1" crossorigin="anonymous" />$imported
    <link rel="preload" href="/$2" crossorigin="anonymous" as="fetch" type="application/wasm" />
    <script type="module">
      import init from '/$1';
      await init({ module_or_path: '/$2' });
    </script>
EOF
)"
  awk -v links="$head_links" '
    /<link data-trunk rel="css"/ { print links; next }
    /<link data-trunk / { next }
    /<!-- The CPU fallback/ { next }
    { print }
  ' web-ui/index.html >"$3"
  if grep -q "data-trunk" "$3"; then
    echo "build-ui: a Trunk link in web-ui/index.html was not replaced" >&2
    exit 1
  fi
}
page "$app_js" "$app_wasm" dist.new/index.html
page "$widget_js" "$widget_wasm" dist.new/widget.html "$widget_split_js"

# Each file beside its brotli and gzip forms, which the relay sends to browsers that accept
# them (relay-server/src/static_files.rs): compressed once here, since brotli's best
# quality takes over a second of CPU for the app's wasm, too much to spend per request.
for file in dist.new/*; do
  brotli -q 11 -f -o "$file.br" "$file"
  gzip -9 -n -c "$file" >"$file.gz"
done

rm -rf dist && mv dist.new dist
echo "build-ui: dist/ ($(du -sh dist | cut -f1))" >&2
