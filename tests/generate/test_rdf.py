"""RDF graphs (N-Triples, Turtle, RDF/XML, JSON-LD) load into the same Self-KG graph: facts, labels, attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import RecordError
from datagen.generate.graph import entity_label, load_graph, relation_label
from datagen.records import read_examples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rdf"
SYNTAXES = ["plants.ttl", "plants.nt", "plants.rdf", "plants.jsonld"]
EX = "http://example.org/plants/"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"


def facts(G) -> set[tuple[str, str, str]]:
    """Triples with blank nodes renamed: each syntax names them its own way."""

    def name(node):
        return "_:b" if node.startswith("_:") else node

    return {(name(h), r, name(t)) for h, t, r in G.edges(keys=True)}


@pytest.mark.parametrize("name", SYNTAXES)
def test_every_syntax_gives_the_same_triples_labels_and_attributes(name):
    G = load_graph(FIXTURES / name)
    assert facts(G) == facts(load_graph(FIXTURES / "plants.ttl"))
    assert (EX + "Rosa_canina", EX + "belongsToFamily", EX + "Rosaceae") in facts(G)
    assert (EX + "Rosa_canina", RDF_TYPE, EX + "Shrub") in facts(G)
    assert (EX + "Rosa_canina", EX + "height", "1-5 m") in facts(G)  # literal-valued: an attribute fact
    assert (EX + "Rosa_canina", EX + "bloomMonth", "6") in facts(G)
    assert G.nodes["1-5 m"].get("literal") is True
    stats = G.graph["stats"]
    assert stats["attribute_facts"] == 3 and stats["attributes_skipped"] == 1  # the @fr note is not shown to anyone
    # labels: skos:prefLabel beats rdfs:label, per language; the French label is never used
    assert entity_label(G, EX + "Rosa_canina", "en") == "Dog rose"
    assert entity_label(G, EX + "Rosa_canina", "zh") == "犬蔷薇"
    assert relation_label(G, EX + "belongsToFamily", "zh") == "属于科"
    assert relation_label(G, EX + "bloomMonth", "en") == "bloom month"  # unlabelled: from the IRI
    assert all(label != "églantier" for table in G.graph["labels"].values() for label in table.values())


def test_rdf_xml_with_an_xml_extension_is_sniffed(tmp_path):
    path = tmp_path / "plants.xml"
    path.write_bytes((FIXTURES / "plants.rdf").read_bytes())
    assert G_facts(path) == facts(load_graph(FIXTURES / "plants.ttl"))


def G_facts(path):
    G = load_graph(path)
    assert G.graph["stats"]["format"] == "rdfxml"
    return facts(G)


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.nt"
    path.write_text(f"<{EX}a> <{EX}p> <{EX}b> .\n<{EX}a> <{EX}p> broken .\n")
    with pytest.raises(RecordError, match=r"bad\.nt:2: invalid N-Triples"):
        load_graph(path)
    ttl = tmp_path / "bad.ttl"
    ttl.write_text("@prefix ex: <http://x.org/> .\nex:a ex:p .\n")
    with pytest.raises(RecordError, match=r"bad\.ttl: invalid turtle"):
        load_graph(ttl)


def test_a_remote_jsonld_context_is_refused_not_fetched(tmp_path):
    path = tmp_path / "remote.jsonld"
    path.write_text(json.dumps({"@context": "https://schema.org/", "@id": EX + "a", "name": "rose"}))
    with pytest.raises(RecordError, match="remote; datagen never fetches"):
        load_graph(path)
    inline = tmp_path / "inline.jsonld"
    inline.write_text(
        json.dumps(
            {"@context": {"ex": EX, "partOf": {"@id": "ex:partOf", "@type": "@id"}}, "@id": "ex:a", "partOf": "ex:b"}
        )
    )
    assert facts(load_graph(inline)) == {(EX + "a", EX + "partOf", EX + "b")}


def test_self_kg_on_turtle_writes_chinese_labels_and_keeps_iris_in_provenance(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "self-kg",
            "--graph",
            str(FIXTURES / "plants.ttl"),
            "--lang",
            "zh",
            "--num",
            "6",
            "--out",
            str(tmp_path / "kg"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    records = read_examples(tmp_path / "kg" / "records.jsonl")
    assert records
    text = " ".join(r.instruction + r.output for r in records)
    assert any(label in text for label in ("犬蔷薇", "苹果树", "蔷薇科"))
    assert EX not in text  # prompts and answers show labels, never IRIs
    assert EX in json.dumps([r.meta["source"] for r in records])
