"""The one place where a policy's prompt texts become token ids.

Every stage that puts a prompt in front of the policy (sampling, evaluation, in-training validation,
labelling, SFT, DPO, GRPO) encodes it here, so the ids a policy is trained on are exactly the ids it was
sampled with. Two modes (config ``task.chat_template``):

- plain (base models, the default): the prompt text (the task's ``prompt_template`` filled in) is
  tokenized with the tokenizer's special tokens (BOS where the tokenizer adds one);
- chat (instruct models): the prompt text is the content of one user message, rendered by the
  tokenizer's own chat template with the generation prompt (``add_generation_prompt=True``), then
  tokenized *without* adding special tokens (the template writes BOS itself when the model has one).
"""

from __future__ import annotations

from collections.abc import Sequence

from rlmec_core.errors import ConfigError

#: A chat template for the tiny demo tokenizer (``task.chat_template: true`` with a bootstrapped policy):
#: BOS, then role markers in plain text (the byte-level BPE encodes them without new special tokens).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def chat_messages(prompt: str) -> list[dict[str, str]]:
    """The conversation a chat model sees for one prompt text: a single user turn."""
    return [{"role": "user", "content": prompt}]


def render_chat(tokenizer, prompt: str) -> str:
    """``prompt`` as the text the chat template makes of it (generation prompt included).

    Raises ``ConfigError`` naming ``task.chat_template`` when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(f"task.chat_template is true but the tokenizer of {name!r} has no chat template; "
                          "set task.chat_template: false for a base model, or use an instruct model")
    return tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts: Sequence[str], *, chat_template: bool) -> list[list[int]]:
    """Token ids of each prompt text as the policy sees it (see the module docstring).

    Returns one list of ids per prompt, in order; ``[]`` for an empty list of prompts.
    """
    if not prompts:
        return []
    if chat_template:
        texts = [render_chat(tokenizer, p) for p in prompts]
        return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [list(x) for x in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
