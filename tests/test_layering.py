"""mixlaw's import graph (every import statement of every module, lazy ones included, parsed with
`ast`): no cycles, no module importing a layer above its own, the laws free of model, trainer,
data and workdir code and layered inside (numerics -> stages -> pipeline -> schema), and each
workdir file name written only in mixlaw/workdir.py."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "mixlaw")

# Lowest first; a module may import its own layer (no cycles) and the layers below it.
LAYERS = [
    ("mixlaw", "errors", "hostenv", "workdir"),
    ("results", "arrays", "corpora"),
    ("data",),
    ("sharding", "optim", "distributed"),
    ("model",),
    ("train", "metrics"),
    ("checkpoint", "ensemble"),
    ("config",),
    ("run",),
    ("sweep",),
    ("laws",),
    ("fitting",),
    ("figures", "report"),
    ("ginsetup", "memory"),
    ("demo",),
    ("cli",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
LAWS_MAY_IMPORT = {"mixlaw", "errors", "results", "laws"}  # results: its KEY only (curves.py)
# Inside mixlaw.laws, lowest first (docs/laws.md, "Layout"): numerics (numbers, fits, curves,
# budgets) -> stages (each one module: FitOptions and earlier results in, a dataclass out) ->
# the pipeline (the stage order) -> the schema (fits.json) and what reads it.
LAWS_LAYERS = [
    ("options", "intervals", "forms", "lbfgs", "fit", "noise", "bootstrap", "cmr",
     "curves", "csvtable", "budgets", "modelfree", "synth", "eq6", "paired", "bracket",
     "seedwise", "references", "referenced", "identify", "schedules", "dynamics"),
    ("budgetfits", "summary", "series", "lfo", "decisions", "ratiolaw", "surface", "checks",
     "related", "dynjson"),
    ("pipeline",),
    ("fitsjson", "api", "fittables", "predict", "laws"),
]
LAWS_LAYER = {name: i for i, names in enumerate(LAWS_LAYERS) for name in names}
# The one sanctioned upward edge: mixlaw.laws resolves write_fits / read_fit_options from
# mixlaw.fitting lazily until mixlaw/cli.py and mixlaw/demo.py import them from there.
SHIM = {("mixlaw.laws", "mixlaw.fitting")}


def _modules() -> dict:
  """{dotted module name: path} of every module of the package."""
  out = {}
  for d, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
  return out


def import_graph(sources: dict) -> dict:
  """{module: {imported mixlaw modules}} from {module: source text}."""
  known = set(sources)
  graph = {}
  for name, text in sources.items():
    is_pkg = name in {m.rsplit(".", 1)[0] for m in known if "." in m}
    deps = set()
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # Relative: resolved against this module's package.
          parts = name.split(".")[:len(name.split(".")) - node.level + (1 if is_pkg else 0)]
          base = ".".join(parts + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
      else:
        continue
      for t in targets:
        while t and t not in known:  # `import mixlaw.laws.options as o` -> that module.
          t = t.rpartition(".")[0]
        if t and t != name:
          deps.add(t)
    graph[name] = deps
  return graph


def _unit(module: str) -> str:
  """The layer unit of a module: mixlaw.laws.api -> 'laws', mixlaw -> 'mixlaw'."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict) -> list:
  """Every import cycle found by depth-first search, as a list of modules."""
  found, state = [], {}

  def visit(node, path):
    state[node] = "open"
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        found.append(path[path.index(dep):] + [dep])
      elif dep not in state:
        visit(dep, path + [dep])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  return found


def upward(graph: dict) -> list:
  """(module, imported module) pairs where the import goes to a higher layer."""
  return [(m, d) for m, deps in graph.items() for d in sorted(deps)
          if LAYER[_unit(d)] > LAYER[_unit(m)] and (m, d) not in SHIM]


def _laws_unit(module: str) -> str:
  """The layer unit inside the laws: mixlaw.laws.fit -> 'fit', mixlaw.laws -> 'laws'."""
  return module.split(".")[2] if module.count(".") >= 2 else "laws"


def laws_upward(graph: dict) -> list:
  """(module, imported module) pairs inside mixlaw.laws that import a higher laws layer."""
  laws = {m: deps for m, deps in graph.items() if _unit(m) == "laws"}
  return [(m, d) for m, deps in laws.items() for d in sorted(deps) if _unit(d) == "laws"
          and LAWS_LAYER[_laws_unit(d)] > LAWS_LAYER[_laws_unit(m)]]


@pytest.fixture(scope="module")
def sources():
  return {m: open(p).read() for m, p in _modules().items()}


def test_every_module_has_a_layer(sources):
  assert {_unit(m) for m in sources} <= set(LAYER), set(map(_unit, sources)) - set(LAYER)


def test_no_import_cycles(sources):
  assert cycles(import_graph(sources)) == []


def test_no_module_imports_a_layer_above_its_own(sources):
  assert upward(import_graph(sources)) == []


def test_laws_import_no_model_trainer_data_or_workdir_code(sources):
  graph = import_graph(sources)
  bad = [(m, d) for m, deps in graph.items() if _unit(m) == "laws" for d in deps
         if _unit(d) not in LAWS_MAY_IMPORT and (m, d) not in SHIM]
  assert bad == []


def test_every_laws_module_has_a_laws_layer(sources):
  laws = {_laws_unit(m) for m in sources if _unit(m) == "laws"}
  assert laws <= set(LAWS_LAYER), laws - set(LAWS_LAYER)


def test_laws_layers_numerics_stages_pipeline_schema(sources):
  assert laws_upward(import_graph(sources)) == []


def test_no_private_name_is_imported_across_laws_modules(sources):
  bad = [(m, a.name) for m, text in sources.items() if _unit(m) == "laws"
         for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom)
         for a in node.names if a.name.startswith("_")]
  assert bad == []


def test_the_checks_fail_on_an_upward_import_and_a_cycle(sources):
  """The graph really is built from the code: one added import is caught."""
  bad = dict(sources)
  bad["mixlaw.run"] += "\nfrom mixlaw import report\n"
  assert ("mixlaw.run", "mixlaw.report") in upward(import_graph(bad))
  bad["mixlaw.workdir"] += "\ndef f():\n  from mixlaw import results\n"  # lazy, same layer + 1
  assert ("mixlaw.workdir", "mixlaw.results") in upward(import_graph(bad))
  bad["mixlaw.laws.fit"] += "\nfrom mixlaw.laws import pipeline\n"  # numerics -> pipeline
  assert ("mixlaw.laws.fit", "mixlaw.laws.pipeline") in laws_upward(import_graph(bad))
  bad = dict(sources)
  bad["mixlaw.arrays"] += "\nimport mixlaw.results\n"  # results imports workdir, not arrays...
  bad["mixlaw.results"] += "\nfrom mixlaw import arrays\n"  # ... so this closes a cycle.
  assert any({"mixlaw.arrays", "mixlaw.results"} <= set(c) for c in cycles(import_graph(bad)))


def test_workdir_file_names_are_written_only_in_workdir_py(sources):
  """No module outside mixlaw/workdir.py (and the laws, which ask it) spells a workdir file name
  as a string of its own, nor joins a path with a workdir folder name: they ask mixlaw.workdir."""
  from mixlaw import workdir
  files = {workdir.RESULTS, workdir.SWEEP, workdir.FITS, workdir.DEMO, workdir.REPORT_MD,
           workdir.REPORT_HTML, workdir.RUN_INFO, workdir.RUN_CONFIG}
  folders = {workdir.FIGURES, workdir.RUNS, workdir.CHECKPOINTS, workdir.TENSORBOARD}
  scripts = [os.path.join(ROOT, "experiments", "pilot_summary.py")] + [
      os.path.join(ROOT, "benchmarks", f) for f in os.listdir(os.path.join(ROOT, "benchmarks"))
      if f.endswith(".py") and f not in ("fit.py", "calibration.py")]  # (ported with the laws)
  texts = {m: t for m, t in sources.items() if m != "mixlaw.workdir" and _unit(m) != "laws"}
  texts.update({p: open(p).read() for p in scripts})
  found = []
  for where, text in texts.items():
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.Constant) and node.value in files:
        found.append((where, node.value))
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "join"):
        found += [(where, a.value) for a in node.args
                  if isinstance(a, ast.Constant) and a.value in folders]
  assert found == []
