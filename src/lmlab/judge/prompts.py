"""MT-Bench's judge prompts (FastChat's judge_prompts.jsonl, Apache-2.0), first turn: single-answer
grading (single-v1), reference-guided grading (single-math-v1), pairwise comparison (pair-v2) and
reference-guided pairwise (pair-math-v1); plus a G-Eval prompt whose answer is the score alone.

MT-Bench grades math, reasoning and coding against a reference answer (NEED_REF_CATS)."""

from __future__ import annotations

NEED_REF_CATS = ("math", "reasoning", "coding")

_SINGLE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]")

_SINGLE_REF = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider correctness and helpfulness. "
    "You will be given a reference answer and the assistant's answer. Begin your evaluation by comparing the "
    "assistant's answer with the reference answer. Identify and correct any mistakes. Be as objective as possible. "
    "After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly following this "
    "format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n"
    "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")

_PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any positional biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    "\"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")

_PAIR_REF_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. Your evaluation should consider correctness and helpfulness. You will be "
    "given a reference answer, assistant A's answer, and assistant B's answer. Your job is to evaluate which "
    "assistant's answer is better. Begin your evaluation by comparing both assistants' answers with the reference "
    "answer. Identify and correct any mistakes. Avoid any positional biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    "providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if "
    "assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")

_PAIR = ("[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
         "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
         "[The End of Assistant B's Answer]")

_PAIR_REF = ("[User Question]\n{question}\n\n[The Start of Reference Answer]\n{reference}\n"
             "[The End of Reference Answer]\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
             "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
             "[The End of Assistant B's Answer]")

_GEVAL = (
    "Please act as an impartial judge and rate the quality of the response provided by an AI assistant to the "
    "user question below, considering helpfulness, relevance, accuracy and level of detail, on a scale of 1 to "
    "{scale}.\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]\n\nReply with the rating only, a number from 1 to {scale}.")


def single(question: str, answer: str, reference: str | None = None) -> list[dict]:
    """MT-Bench single-answer grading; with a reference, the reference-guided prompt."""
    user = (_SINGLE_REF.format(question=question, answer=answer, reference=reference) if reference
            else _SINGLE.format(question=question, answer=answer))
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}]


def pairwise(question: str, answer_a: str, answer_b: str, reference: str | None = None) -> list[dict]:
    if reference:
        return [{"role": "system", "content": _PAIR_REF_SYSTEM},
                {"role": "user", "content": _PAIR_REF.format(question=question, answer_a=answer_a,
                                                             answer_b=answer_b, reference=reference)}]
    return [{"role": "system", "content": _PAIR_SYSTEM},
            {"role": "user", "content": _PAIR.format(question=question, answer_a=answer_a, answer_b=answer_b)}]


def geval(question: str, answer: str, scale: int = 10) -> list[dict]:
    return [{"role": "user", "content": _GEVAL.format(question=question, answer=answer, scale=scale)}]
