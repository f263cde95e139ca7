"""A Table (analysis.tablekit) as Markdown, LaTeX (booktabs) and CSV, written atomically.

Markdown and LaTeX show one sub-table per (block, section): a line per method and source
(paper, ours, chance, Δ), a column per benchmark or quantity; the legend and the notes
follow. The CSV is the long form with every number behind the text (one line per cell).
Pipe tables are written here rather than by pandas' to_markdown, which needs `tabulate`.

>>> latex_escape("w/o M_Spec: 23.1 ± 0.4, Δ ≤ 5%")
'w/o M\\\\_Spec: 23.1 $\\\\pm$ 0.4, $\\\\Delta$ $\\\\leq$ 5\\\\%'
"""
from __future__ import annotations

from pathlib import Path

from geora.fileio import atomic_write_text

from analysis.tablekit import Table

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "≤": r"$\leq$", "≥": r"$\geq$",
          "−": "-", "—": "---", "–": "--", "Δ": r"$\Delta$", "∩": r"$\cap$", "∪": r"$\cup$",
          "×": r"$\times$", "·": r"$\cdot$", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    """Text -> LaTeX: special characters escaped, the few symbols the tables use as math."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def layout(table: Table) -> list[tuple[str, str, list[str], list[tuple[str, str, str, list[str]]]]]:
    """[(block, section, columns, [(method, row, source, texts)])] in the order the cells were added."""
    parts: dict[tuple[str, str], dict] = {}
    for c in table.cells:
        part = parts.setdefault((c["block"], c["section"]), {"columns": [], "rows": {}})
        if c["column"] not in part["columns"]:
            part["columns"].append(c["column"])
        part["rows"].setdefault((c.get("method"), c["row"], c["source"]), {})[c["column"]] = c["text"]
    return [(block, section, p["columns"],
             [(method, row, source, [cells.get(col, "") for col in p["columns"]])
              for (method, row, source), cells in p["rows"].items()])
            for (block, section), p in parts.items()]


def _heading(block: str, section: str) -> str:
    return " · ".join(x for x in (block, section) if x)


def frame_markdown(df) -> str:
    """A pandas DataFrame as a GitHub Markdown table (no extra dependency)."""
    import pandas as pd

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else f"{v:g}" if isinstance(v, float)
                                       else str(v) for v in row) + " |")
    return "\n".join(lines)


def markdown(table: Table) -> str:
    out = [f"## {table.name}: {table.title}", ""]
    for block, section, columns, rows in layout(table):
        out += [f"### {_heading(block, section)}", "",
                "| " + " | ".join(["Method", "", *columns]) + " |",
                "|" + "---|" * 2 + "---:|" * len(columns)]
        previous = None
        for _, row, source, texts in rows:
            label = "" if row == previous else row
            previous = row
            out.append("| " + " | ".join(x.replace("|", "\\|") for x in (label, source, *texts)) + " |")
        out.append("")
    out += [f"- {line}" for line in table.legend]
    if table.notes:
        out += ["", "Notes:"] + [f"- {line}" for line in table.notes]
    return "\n".join(out) + "\n"


def latex(table: Table) -> str:
    out = [f"% {table.name}: {table.title}", "% written by python -m analysis.tables; needs \\usepackage{booktabs}"]
    for block, section, columns, rows in layout(table):
        out += [r"\begin{table}[t]", r"\centering\scriptsize",
                rf"\caption{{{latex_escape(table.title)} ({latex_escape(_heading(block, section))})}}",
                rf"\begin{{tabular}}{{ll{'r' * len(columns)}}}", r"\toprule",
                " & ".join(["Method", "", *(latex_escape(c) for c in columns)]) + r" \\", r"\midrule"]
        previous = previous_method = None
        for method, row, source, texts in rows:
            if previous_method is not None and method != previous_method:
                out.append(r"\addlinespace")        # a little space between methods
            label = "" if row == previous else latex_escape(row)
            previous, previous_method = row, method
            out.append(" & ".join([label, latex_escape(source), *(latex_escape(x) for x in texts)]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if table.legend:
            out.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(x) for x in table.legend) + "}")
        out += [r"\end{table}", ""]
    out += [f"% note: {line}" for line in table.notes]
    return "\n".join(out) + "\n"


def csv(table: Table) -> str:
    return table.frame().to_csv(index=False)


def write(table: Table, out_dir: str | Path) -> list[Path]:
    """<out_dir>/<table>.md, .tex and .csv, each written atomically (rendered first)."""
    texts = {".md": markdown(table), ".tex": latex(table), ".csv": csv(table)}
    paths = []
    for suffix, text in texts.items():
        path = Path(out_dir) / f"{table.name}{suffix}"
        atomic_write_text(path, text)
        paths.append(path)
    return paths
