"""The benchmarks' CSV files: '# key=value' metadata lines, then a header and the rows.

benchmarks/harness/csv.hpp (C++) and benchmarks/python/peers.py write this format; anode-cifar's
log.csv and bench_mlp.csv are the same without metadata. Every script that reads results reads
them here, so that a change of the format is made once.
"""
import csv


def parse_number(text):
    """`text` as an int, else as a float, else unchanged: "8" -> 8, "0.5" -> 0.5, "nan" -> nan,
    "ok" -> "ok", "" -> "" (an empty cell stays empty rather than becoming 0)."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def parse_metadata_line(line):
    """(key, value) of a '# key=value' line (the space after '#' optional, both sides stripped)."""
    key, _, value = line[1:].partition("=")
    return key.strip(), value.strip()


def read_csv(path, numbers=True):
    """(metadata, rows) of a results CSV.

    metadata: the '# key=value' lines as a dict (the first of a repeated key wins, as in a file
    concatenated by concat_csvs); rows: one dict per data line. With `numbers` every cell that
    reads as a number becomes one (parse_number); without, the cells stay the strings of the file,
    for a caller that writes them back unchanged.
    """
    meta, lines = {}, []
    with open(path, newline="") as f:
        for line in f:
            if line.startswith("#"):
                key, value = parse_metadata_line(line)
                meta.setdefault(key, value)
            elif line.strip():
                lines.append(line)
    rows = list(csv.DictReader(lines))
    if numbers:
        rows = [{k: parse_number(v) for k, v in r.items()} for r in rows]
    return meta, rows


def concat_csvs(paths, out):
    """Writes the CSVs `paths` (same columns) to `out` as one: the first file's metadata lines,
    one header, every file's rows in order. The per-process CSVs of one grid become one table."""
    header_done = False
    with open(out, "w") as o:
        for i, p in enumerate(paths):
            with open(p) as f:
                seen_header = False
                for line in f:
                    if line.startswith("#"):
                        if i == 0:
                            o.write(line)
                        continue
                    if not seen_header:
                        seen_header = True
                        if header_done:
                            continue
                        header_done = True
                    o.write(line)


def merged_metadata(paths):
    """The metadata of several results files as one dict; a key takes its value from the first
    file that has it (the files of one run describe the same machine)."""
    info = {}
    for p in paths:
        for k, v in read_csv(p)[0].items():
            info.setdefault(k, v)
    return info
