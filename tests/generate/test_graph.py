"""Loading knowledge graphs: every format, bad rows with file:line, self-loops, duplicates, dangling references."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import RecordError
from datagen.generate.graph import all_labels, entity_label, load_graph, normalise_label, relation_label


def triples(G):
    return sorted((h, r, t) for h, t, r in G.edges(keys=True))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_with_header_merges_duplicates_and_drops_self_loops(tmp_path):
    path = write(
        tmp_path / "kg.tsv",
        "head\trelation\ttail\n"
        "# a comment line\n"
        "rose\tplant_family\trosaceae\n"
        "\n"
        "rose\tplant_family\trosaceae\n"  # duplicate
        "rose\tflower_color\tred\n"
        "rose\trelated_to\trose\n",
    )  # self-loop
    G = load_graph(path)
    assert triples(G) == [("rose", "flower_color", "red"), ("rose", "plant_family", "rosaceae")]
    stats = G.graph["stats"]
    assert (stats["format"], stats["triples"], stats["entities"], stats["relations"]) == ("tsv", 2, 3, 2)
    assert (stats["duplicates_merged"], stats["self_loops_dropped"], stats["facts_read"]) == (1, 1, 4)

    kept = load_graph(path, keep_self_loops=True)
    assert ("rose", "related_to", "rose") in triples(kept) and kept.graph["stats"]["self_loops_kept"] == 1


def test_headerless_tsv_csv_with_reordered_header_and_sniffed_txt(tmp_path):
    plain = load_graph(write(tmp_path / "a.tsv", "rose\tplant_family\trosaceae\ntulip\tplant_family\tliliaceae\n"))
    assert triples(plain) == [("rose", "plant_family", "rosaceae"), ("tulip", "plant_family", "liliaceae")]
    csv = load_graph(
        write(
            tmp_path / "b.csv",
            'object,subject,predicate\nrosaceae,rose,plant_family\n"Rosales, order",rosaceae,order\n',
        )
    )
    assert triples(csv) == [("rosaceae", "order", "Rosales, order"), ("rose", "plant_family", "rosaceae")]
    txt = load_graph(write(tmp_path / "c.txt", "rose\tplant_family\trosaceae\n"))
    assert triples(txt) == [("rose", "plant_family", "rosaceae")] and txt.graph["stats"]["format"] == "tsv"


def test_jsonl_accepts_head_relation_tail_and_subject_predicate_object(tmp_path):
    path = write(
        tmp_path / "kg.jsonl",
        json.dumps({"head": "rose", "relation": "plant_family", "tail": "rosaceae"})
        + "\n"
        + json.dumps({"subject": "rose", "predicate": "petals", "object": 5, "confidence": 0.9})
        + "\n",
    )
    G = load_graph(path)
    assert triples(G) == [("rose", "petals", "5"), ("rose", "plant_family", "rosaceae")]
    assert G.graph["stats"]["format"] == "jsonl"


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("rose\tplant_family\trosaceae\nrose\tflower_color\n", 2, "expected 3 columns (head, relation, tail), got 2"),
        ("head\trelation\ttail\nrose\tplant_family\trosaceae\n\nrose\t\tred\n", 4, "empty relation"),
        ("rose\tplant_family\trosaceae\ta\tb\n", 1, "expected 3 columns"),
    ],
)
def test_bad_tsv_rows_name_file_and_line(tmp_path, content, line, message):
    path = write(tmp_path / "kg.tsv", content)
    with pytest.raises(RecordError, match="skip-bad-rows") as caught:
        load_graph(path)
    assert str(caught.value).startswith(f"{path}:{line}: ") and message in str(caught.value)


def test_bad_jsonl_rows_name_file_and_line_and_skipping_counts_them(tmp_path):
    path = write(
        tmp_path / "kg.jsonl",
        '{"head": "rose", "relation": "plant_family", "tail": "rosaceae"}\n'
        '{"head": "tulip", "relation": "plant_family"}\n'
        "[1, 2, 3]\n"
        '{"head": "tulip", "relation": "flower_color", "tail": " "}\n'
        '{"head": "tulip", "relation": "plant_family", "tail": "liliaceae"}\n',
    )
    with pytest.raises(RecordError, match=rf"^{path}:2: missing tail"):
        load_graph(path)
    G = load_graph(path, skip_bad_rows=True)
    assert triples(G) == [("rose", "plant_family", "rosaceae"), ("tulip", "plant_family", "liliaceae")]
    stats = G.graph["stats"]
    assert stats["bad_rows_skipped"] == 3
    assert [e.split(": ", 1)[0] for e in stats["bad_row_examples"]] == [f"{path}:2", f"{path}:3", f"{path}:4"]


def test_cli_bad_row_exits_2_with_file_line_and_writes_nothing(tmp_path):
    path = write(tmp_path / "kg.tsv", "rose\tplant_family\trosaceae\nrose\tflower_color\n")
    result = CliRunner().invoke(cli, ["self-kg", "--graph", str(path), "--num", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"{path}:2: expected 3 columns" in result.output
    assert not (tmp_path / "out").exists()
    skipped = CliRunner().invoke(
        cli, ["self-kg", "--graph", str(path), "--num", "3", "--out", str(tmp_path / "out"), "--skip-bad-rows"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["graph"]["bad_rows_skipped"] == 1


def _nx_graph():
    G = nx.MultiDiGraph()
    G.add_node("rose", label="Rose", kind="shrub", native_to=["Asia", "Europe"])
    G.add_node("rosaceae", label_zh="蔷薇科")
    G.add_node("aphid")
    G.add_edge("rose", "rosaceae", relation="plant_family")
    G.add_edge("rose", "aphid", relation="common_pest")
    G.add_edge("rose", "aphid", relation="common_pest")  # parallel duplicate: merged
    return G


def _check_nx_graph(G, fmt):
    assert triples(G) == [
        ("rose", "common_pest", "aphid"),
        ("rose", "kind", "shrub"),
        ("rose", "plant_family", "rosaceae"),
    ]
    assert G.nodes["shrub"]["literal"] is True and not G.nodes["rosaceae"].get("literal")
    stats = G.graph["stats"]
    assert (stats["format"], stats["attribute_facts"], stats["duplicates_merged"], stats["literals"]) == (fmt, 1, 1, 1)
    assert entity_label(G, "rose", "en") == "Rose"


def test_graphml_written_by_networkx(tmp_path):
    G = _nx_graph()
    G.nodes["rose"].pop("native_to")  # GraphML has no list type
    nx.write_graphml(G, tmp_path / "kg.graphml")
    loaded = load_graph(tmp_path / "kg.graphml")
    _check_nx_graph(loaded, "graphml")
    assert entity_label(loaded, "rosaceae", "zh") == "蔷薇科" and entity_label(loaded, "rosaceae", "en") == "rosaceae"


def test_gml_written_by_networkx_uses_labels_as_ids(tmp_path):
    G = _nx_graph()
    G.nodes["rose"].pop("native_to")
    G.nodes["rose"].pop("label")  # in GML the label *is* the node name
    nx.write_gml(G, tmp_path / "kg.gml")
    loaded = load_graph(tmp_path / "kg.gml")
    assert triples(loaded) == [
        ("rose", "common_pest", "aphid"),
        ("rose", "kind", "shrub"),
        ("rose", "plant_family", "rosaceae"),
    ]
    assert loaded.graph["stats"]["format"] == "gml" and loaded.graph["stats"]["duplicates_merged"] == 1


def test_node_link_json_written_by_networkx_with_list_attributes(tmp_path):
    data = nx.node_link_data(_nx_graph(), edges="links")
    (tmp_path / "kg.json").write_text(json.dumps(data))
    loaded = load_graph(tmp_path / "kg.json")
    assert ("rose", "native_to", "Asia") in triples(loaded) and ("rose", "native_to", "Europe") in triples(loaded)
    assert loaded.graph["stats"]["attribute_facts"] == 3
    data = nx.node_link_data(_nx_graph(), edges="edges")
    (tmp_path / "kg2.json").write_text(json.dumps(data))
    assert triples(load_graph(tmp_path / "kg2.json")) == triples(loaded)


GRAPHML_DANGLING = """<?xml version="1.0" encoding="UTF-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="r" for="edge" attr.name="relation" attr.type="string"/>
  <graph edgedefault="directed">
    <node id="rose"/>
    <node id="rosaceae"/>
    <edge source="rose" target="rosaceae"><data key="r">plant_family</data></edge>
    <edge source="rose" target="ghost"><data key="r">common_pest</data></edge>
  </graph>
</graphml>
"""


def test_graphml_edge_to_undeclared_node_is_dropped_added_or_an_error(tmp_path):
    path = write(tmp_path / "kg.graphml", GRAPHML_DANGLING)
    dropped = load_graph(path)
    assert triples(dropped) == [("rose", "plant_family", "rosaceae")] and "ghost" not in dropped
    assert dropped.graph["stats"]["dangling_refs"] == 1 and dropped.graph["stats"]["dangling_policy"] == "drop"
    added = load_graph(path, dangling="add")
    assert ("rose", "common_pest", "ghost") in triples(added) and added.graph["stats"]["dangling_refs"] == 1
    with pytest.raises(RecordError, match=rf"^{path}:8: edge 'rose' -> 'ghost' refers to undeclared node 'ghost'"):
        load_graph(path, dangling="error")


def test_graphml_edge_without_relation_and_broken_xml_name_the_line(tmp_path):
    path = write(tmp_path / "kg.graphml", GRAPHML_DANGLING.replace('<data key="r">plant_family</data>', ""))
    with pytest.raises(RecordError, match=rf"^{path}:7: edge 'rose' -> 'rosaceae' has no relation"):
        load_graph(path)
    broken = write(tmp_path / "broken.graphml", GRAPHML_DANGLING.replace("</graph>", "</grap>"))
    with pytest.raises(RecordError, match=rf"^{broken}:9: invalid GraphML"):
        load_graph(broken)


def test_node_link_and_gml_dangling_references_are_counted(tmp_path):
    data = {
        "directed": True,
        "multigraph": True,
        "graph": {},
        "nodes": [{"id": "rose"}, {"id": "rosaceae"}],
        "links": [
            {"source": "rose", "target": "rosaceae", "relation": "plant_family"},
            {"source": "rose", "target": "missing", "relation": "common_pest"},
            {"source": "rose", "target": "rosaceae"},
        ],
    }
    path = write(tmp_path / "kg.json", json.dumps(data))
    with pytest.raises(RecordError, match=rf"^{path}: links\[2\]: edge 'rose' -> 'rosaceae' has no relation"):
        load_graph(path)
    G = load_graph(path, skip_bad_rows=True)
    assert triples(G) == [("rose", "plant_family", "rosaceae")]
    assert (G.graph["stats"]["dangling_refs"], G.graph["stats"]["bad_rows_skipped"]) == (1, 1)

    gml = write(
        tmp_path / "kg.gml",
        'graph [\n  directed 1\n  node [ id 0 label "rose" ]\n  node [ id 1 label "rosaceae" ]\n'
        '  edge [ source 0 target 1 relation "plant_family" ]\n'
        '  edge [ source 0 target 7 relation "common_pest" ]\n]\n',
    )
    G = load_graph(gml)
    assert triples(G) == [("rose", "plant_family", "rosaceae")] and G.graph["stats"]["dangling_refs"] == 1
    with pytest.raises(RecordError, match=rf"^{gml}:6: edge 'rose' -> '7' refers to undeclared node"):
        load_graph(gml, dangling="error")
    bad = write(tmp_path / "bad.gml", 'graph [\n  node [ id 0 label "rose" \n')
    with pytest.raises(RecordError, match=rf"^{bad}:\d+: invalid GML"):
        load_graph(bad)


def test_labels_files_and_display_normalisation(tmp_path):
    kg = write(tmp_path / "kg.tsv", "rose\tplant_family\tdisease_or_syndrome\nrose\thasSymptom\tblack_spot\n")
    write(tmp_path / "labels.zh.tsv", "rose\t玫瑰\nplant_family\t所属科\nnot_in_graph\t无\n")
    G = load_graph(kg, labels=tmp_path / "labels.zh.tsv")
    assert entity_label(G, "rose", "zh") == "玫瑰" and relation_label(G, "plant_family", "zh") == "所属科"
    assert entity_label(G, "rose", "en") == "rose"  # a Chinese label never leaks into English text
    assert entity_label(G, "disease_or_syndrome", "en") == "disease or syndrome"
    assert relation_label(G, "hasSymptom", "zh") == "has symptom"
    assert G.graph["stats"]["labels"] == {
        "path": str(tmp_path / "labels.zh.tsv"),
        "languages": ["zh"],
        "loaded": 2,
        "unused": 1,
    }
    assert triples(G)[0] == ("rose", "hasSymptom", "black_spot")  # ids stay intact
    assert all_labels(G, "rose") == {"rose", "玫瑰"}

    write(tmp_path / "labels.tsv", "id\tlabel_en\tlabel_zh\nrose\tRose\t玫瑰\nblack_spot\tBlack spot\t\n")
    G = load_graph(kg, labels=tmp_path / "labels.tsv")
    assert (entity_label(G, "rose", "en"), entity_label(G, "black_spot", "en")) == ("Rose", "Black spot")
    assert entity_label(G, "black_spot", "zh") == "black spot"
    write(tmp_path / "bad_labels.tsv", "id\tlabel_zh\nrose\n")
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'bad_labels.tsv'}:2: expected 2 columns"):
        load_graph(kg, labels=tmp_path / "bad_labels.tsv")


def test_normalise_label():
    assert normalise_label("disease_or_syndrome") == "disease or syndrome"
    assert normalise_label("http://example.org/plants#Rosa_canina") == "Rosa canina"
    assert normalise_label("ex:hasSymptom", relation=True) == "has symptom"
    assert normalise_label("MESH:D003924") == "MESH:D003924"
    assert normalise_label("isPartOf", relation=True) == "is part of"
    assert normalise_label("HIV_infection") == "HIV infection"
    assert normalise_label("  spaced   out ") == "spaced out"


def test_empty_or_missing_graph_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        load_graph(tmp_path / "nope.tsv")
    with pytest.raises(RecordError, match="no facts found"):
        load_graph(write(tmp_path / "empty.tsv", "head\trelation\ttail\n"))
    with pytest.raises(RecordError, match=r"header .* does not name all of head, relation and tail"):
        load_graph(write(tmp_path / "half.tsv", "head\trelation\tfoo\na\tb\tc\n"))
