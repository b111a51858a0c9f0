"""Prompt files in each layout the field uses: read by their columns, filtered, and refused clearly."""

from __future__ import annotations

import pytest

from circuits.evaluation.prompts import PromptFileError, PromptRow, filter_rows, read_prompts, write_esd_csv


def write(path, text):
    path.write_text(text)
    return path


def test_esd_layout_reads_seed_guidance_and_class(tmp_path):
    path = write(tmp_path / "imagenette.csv",
                 "case_number,prompt,evaluation_seed,evaluation_guidance,class\n"
                 "0,Image of cassette player,4068,7.5,cassette player\n"
                 "1,Image of church,2312,,church\n")
    rows = read_prompts(path)
    assert rows.layout == "esd"
    assert rows.rows[0] == PromptRow(case="0", prompt="Image of cassette player", seed=4068, guidance=7.5,
                                     label="cassette player")
    assert rows.rows[1].guidance is None and rows.rows[1].seed == 2312
    church = filter_rows(rows, label="Church")
    assert [r.case for r in church] == ["1"] and church.filters == ("label=Church",)


def test_esd_artist_column_and_pandas_index(tmp_path):
    # UCE/ESD artist files are written by pandas: an unnamed index column, the artist as the label
    path = write(tmp_path / "artists.csv", ",case_number,prompt,evaluation_seed,artist\n"
                 "0,10,A painting by Van Gogh,11.0,Van Gogh\n")
    row = read_prompts(path).rows[0]
    assert (row.case, row.seed, row.label) == ("10", 11, "Van Gogh")
    assert row.extra == {}


def test_i2p_layout_and_filters(tmp_path):
    path = write(tmp_path / "i2p.csv",
                 "prompt,categories,hard,inappropriate_percentage,nudity_percentage,lexica_url,sd_seed,"
                 "sd_guidance_scale,sd_image_width,sd_image_height,sd_model\n"
                 '"a nude, painting","sexual,violence",1,90,80.5,u,1234,7,512,512,1.4\n'
                 '"a calm lake",violence,0,10,0.0,u,5,9,512,768,1.4\n'
                 '"a beach",sexual,0,40,20,u,6,7.5,512,512,1.4\n')
    rows = read_prompts(path)
    assert rows.layout == "i2p"
    first = rows.rows[0]
    assert (first.case, first.prompt, first.seed, first.guidance) == ("0", "a nude, painting", 1234, 7.0)
    assert first.categories == ("sexual", "violence") and (first.width, first.height) == (512, 512)
    assert first.extra["nudity_percentage"] == "80.5"
    assert rows.rows[1].height == 768
    sexual = filter_rows(rows, category="Sexual")
    assert [r.case for r in sexual] == ["0", "2"]
    hard = filter_rows(sexual, min_percentage=50)
    assert [r.case for r in hard] == ["0"]  # case numbers keep the file position
    assert hard.filters == ("category=Sexual", "nudity_percentage>=50")
    with pytest.raises(PromptFileError, match="leave no rows"):
        filter_rows(rows, category="hate")


def test_ringabell_and_mma_layouts(tmp_path):
    ring = read_prompts(write(tmp_path / "ring.csv", "sensitive prompt\nnaked woman on a beach\nsecond one\n"))
    assert ring.layout == "ringabell" and [r.prompt for r in ring] == ["naked woman on a beach", "second one"]
    assert [r.case for r in ring] == ["0", "1"] and ring.rows[0].seed is None
    mma = read_prompts(write(tmp_path / "mma.csv", "adv_prompt,clean_prompt\nxq@@ body,a nude body\n"))
    assert mma.layout == "mma"
    assert (mma.rows[0].prompt, mma.rows[0].label) == ("xq@@ body", "a nude body")


def test_text_file(tmp_path):
    rows = read_prompts(write(tmp_path / "p.txt", "a red circle\n\n  a blue square  \n"))
    assert rows.layout == "text" and [r.prompt for r in rows] == ["a red circle", "a blue square"]


def test_unknown_layout_names_columns_and_layouts(tmp_path):
    with pytest.raises(PromptFileError) as error:
        read_prompts(write(tmp_path / "odd.csv", "text,seed\nhello,1\n"))
    message = str(error.value)
    assert "['text', 'seed']" in message
    for layout in ("esd", "i2p", "ringabell", "mma", "adv_prompt", "sensitive prompt"):
        assert layout in message


def test_forced_layout_missing_column(tmp_path):
    with pytest.raises(PromptFileError, match=r"layout 'i2p' needs column\(s\) \['sd_seed'\]"):
        read_prompts(write(tmp_path / "a.csv", "prompt\nx\n"), layout="i2p")


@pytest.mark.parametrize("text, match", [
    ("case_number,prompt\n1,a\n1,b\n", "appears twice"),
    ("case_number,prompt\n../x,a\n", "cannot name a file"),
    ("case_number,prompt,evaluation_seed\n1,a,abc\n", "not a number"),
    ("case_number,prompt\n1,\n", "is empty"),
    ("case_number,prompt\n", "holds no prompts"),
])
def test_bad_rows_are_named(tmp_path, text, match):
    with pytest.raises(PromptFileError, match=match):
        read_prompts(write(tmp_path / "bad.csv", text))


def test_write_esd_round_trip(tmp_path):
    rows = [PromptRow("0", "a red circle", seed=3, label="red", categories=("explicit",)),
            PromptRow("1", "a, quoted \"one\"", guidance=5.0, label="blue", categories=("a", "b"))]
    back = read_prompts(write_esd_csv(tmp_path / "set.csv", rows))
    assert back.layout == "esd" and list(back.rows) == rows
