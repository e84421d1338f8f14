"""Example.conversation() and Example.turns(): the one way a record becomes chat messages, in en and zh."""

from __future__ import annotations

import pytest

from datagen.records import Example

CASES = {
    "en": ("Translate to French.", "Good morning", "Bonjour"),
    "zh": ("把这句话翻译成英文。", "早上好", "Good morning"),
}


@pytest.mark.parametrize("lang", CASES)
def test_a_single_turn_record_is_a_user_turn_of_instruction_and_input_then_its_output(lang):
    instruction, input_, output = CASES[lang]
    example = Example(instruction=instruction, input=input_, output=output, lang=lang)
    assert example.conversation() == [
        {"role": "user", "content": f"{instruction}\n\n{input_}"},
        {"role": "assistant", "content": output},
    ]
    assert Example(instruction=instruction, output=output).conversation()[0] == {
        "role": "user",
        "content": instruction,
    }
    assert example.turns() == example.conversation()
    assert example.conversation("系统" if lang == "zh" else "Be brief.")[0] == {
        "role": "system",
        "content": "系统" if lang == "zh" else "Be brief.",
    }


@pytest.mark.parametrize("lang", CASES)
def test_a_conversation_gives_its_own_turns_and_keeps_its_own_system_message(lang):
    instruction, input_, output = CASES[lang]
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": output},
        {"role": "user", "content": input_},
        {"role": "assistant", "content": output + "!"},
    ]
    example = Example(instruction=instruction, output=output, messages=messages, lang=lang)
    assert example.conversation() == messages
    assert example.conversation("other") == messages  # its own system message stands
    assert example.turns() == messages[1:]
    example.conversation().append({"role": "user", "content": "x"})  # a copy: the record is untouched
    assert example.messages == messages and len(example.messages) == 5
    no_system = Example(instruction=instruction, output=output, messages=messages[1:])
    assert no_system.conversation("Be brief.") == [{"role": "system", "content": "Be brief."}, *messages[1:]]
