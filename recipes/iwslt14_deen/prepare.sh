#!/usr/bin/env bash
# IWSLT14 German-English as in fairseq's standard preparation: Moses tokenization, lowercasing,
# length filtering (1-175 tokens, ratio 1.5), every 23rd training pair as validation, the TED dev/test
# sets as test, a joint BPE of 10k merges, then fairseq-preprocess with a joined dictionary.
#
#   prepare.sh OUT                 download the data (needs the internet)
#   prepare.sh --orig DIR OUT      use an already downloaded and unpacked de-en/ directory
#   prepare.sh --tiny OUT          the same pipeline on the project's toy corpus (no download)
# Result: OUT/tokenized/{train,valid,test}.{de,en} (BPE) and OUT/data-bin.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

URL=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz
orig="" tiny=0 merges=10000
while [ $# -gt 1 ]; do
  case "$1" in
    --orig) orig=$2; shift 2 ;;
    --tiny) tiny=1; merges=300; shift ;;
    *) die "unknown option $1 (allowed: --orig DIR, --tiny)" ;;
  esac
done
[ $# -eq 1 ] || die "usage: prepare.sh [--tiny | --orig DIR] OUT"
out=$1
tmp=$out/tmp tok=$out/tokenized
mkdir -p "$tmp" "$tok"

tokenize() {  # LANG < raw > tokenized, lowercased
  "$BIN/sacremoses" -l "$1" -j 1 tokenize -x | "$PY" "$RECIPE_DIR/tools.py" lower
}

if [ "$tiny" = 1 ]; then
  PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m examples.corpus "$tmp/raw" --train 1500 --valid 100 --test 100
  for l in de en; do
    for split in train valid test; do tokenize "$l" < "$tmp/raw/$split.$l" > "$tmp/$split.$l"; done
  done
else
  if [ -z "$orig" ]; then
    mkdir -p "$out/orig"
    curl -fL --retry 3 -o "$out/orig/de-en.tgz" "$URL"
    tar -xzf "$out/orig/de-en.tgz" -C "$out/orig"
    orig=$out/orig/de-en
  fi
  [ -f "$orig/train.tags.de-en.de" ] || die "$orig/train.tags.de-en.de not found"
  for l in de en; do
    grep -v -e '<url>' -e '<talkid>' -e '<keywords>' "$orig/train.tags.de-en.$l" \
      | sed -e 's/<\/\?title>//g' -e 's/<\/\?description>//g' | tokenize "$l" > "$tmp/all.$l"
  done
  "$PY" "$RECIPE_DIR/tools.py" clean "$tmp/all.de" "$tmp/all.en" "$tmp/clean.de" "$tmp/clean.en"
  for l in de en; do
    awk 'NR % 23 == 0' "$tmp/clean.$l" > "$tmp/valid.$l"
    awk 'NR % 23 != 0' "$tmp/clean.$l" > "$tmp/train.$l"
    for set in IWSLT14.TED.dev2010 IWSLT14.TEDX.dev2012 IWSLT14.TED.tst2010 IWSLT14.TED.tst2011 \
               IWSLT14.TED.tst2012; do
      grep '<seg id' "$orig/$set.de-en.$l.xml" | sed -e 's/<seg id="[0-9]*">[[:space:]]*//' \
        -e 's/[[:space:]]*<\/seg>[[:space:]]*//' -e "s/’/'/g" | tokenize "$l"
    done > "$tmp/test.$l"
  done
fi

cat "$tmp/train.de" "$tmp/train.en" > "$tmp/train.both"
"$BIN/subword-nmt" learn-bpe -s "$merges" < "$tmp/train.both" > "$tok/code"
for l in de en; do
  for split in train valid test; do
    "$BIN/subword-nmt" apply-bpe -c "$tok/code" < "$tmp/$split.$l" > "$tok/$split.$l"
  done
done
rm -rf "$out/data-bin"
"$BIN/fairseq-preprocess" --source-lang de --target-lang en --trainpref "$tok/train" --validpref "$tok/valid" \
  --testpref "$tok/test" --destdir "$out/data-bin" --joined-dictionary --workers 2
echo "prepared $out/data-bin"
