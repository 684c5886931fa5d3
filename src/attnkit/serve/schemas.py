"""The JSON of every endpoint as pydantic models: FastAPI validates requests against them and writes the
OpenAPI description (``GET /openapi.json``) from them.

Requests are strict (a string is not a number, ``1`` is not ``true``) and closed (an unknown field is an
error, so a misspelt option is named instead of ignored). The bounds here are the hard ones (a beam of 0
is never valid); the server's configured limits (:class:`attnkit.serve.limits.Limits`) are checked by the
endpoints, which name the limit in the error."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from attnkit.tokenizers.chat import ROLES


def _valid_unicode(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which are not text and which the tokenizers cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the text contains a lone surrogate at character {exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]
Texts = Annotated[list[Text], Field(min_length=1, description="one or more texts")]
ModelName = Annotated[str | None, Field(default=None, description="a loaded model's name (GET /v1/models); "
                                                                  "optional when one loaded model can do this")]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", protected_namespaces=())


class TranslateRequest(Request):
    model: ModelName = None
    texts: Texts
    beam_size: Annotated[int, Field(ge=1)] = 1
    length_penalty: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False)] = 1.0
    n_best: Annotated[int | None, Field(ge=1, description="also return the n best hypotheses of the beam with "
                                                          "their scores (n <= beam_size)")] = None
    alignments: bool = Field(False, description="the source token each target token attends to most (the last "
                                                "layer's encoder-decoder attention, averaged over heads)")


class ChatMessage(Request):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: Text


class GenerateRequest(Request):
    model: ModelName = None
    prompt: Text = ""
    messages: Annotated[list[ChatMessage] | None, Field(min_length=1, description="a chat instead of a prompt: "
                                                        "rendered with the model's chat template, the assistant's "
                                                        "turn opened")] = None
    max_new_tokens: Annotated[int | None, Field(ge=0, description="default: 64, or the server's limit when "
                                                                  "lower")] = None
    temperature: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False, description="0 = greedy")] = 0.8
    top_k: Annotated[int | None, Field(ge=1)] = None
    top_p: Annotated[float | None, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = None
    seed: Annotated[int | None, Field(ge=0, le=2**63 - 1, description="the same seed gives the same tokens; "
                                                                      "without one the server draws one and "
                                                                      "returns it")] = None
    stream: bool = Field(False, description="answer with server-sent events: one per token, then the result")


class EmbedRequest(Request):
    model: ModelName = None
    texts: Texts
    normalize: bool = True


class ClassifyRequest(Request):
    model: ModelName = None
    texts: Texts


class AttentionRequest(Request):
    model: ModelName = None
    text: NonEmptyText
    target: Text | None = Field(None, description="translation models: the target to show (default: the "
                                                  "model's own greedy translation)")
    html: bool = Field(False, description="also return the attention viewer page for these weights")


# ------------------------------------------------------------------------------------------- answers
class Error(BaseModel):
    error: str


class Alignment(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    links: list[int] = Field(description="for each target token, the index of the source token it attends to most")


class Hypothesis(BaseModel):
    text: str
    score: float | None = Field(description="the length-normalised log-probability beam search ranks by (null "
                                            "for greedy decoding, which ranks nothing)")


class Translation(BaseModel):
    text: str
    alignment: Alignment | None = None
    hypotheses: list[Hypothesis] | None = Field(None, description="with n_best: the n best, best first")


class TranslateResponse(BaseModel):
    model: str
    translations: list[Translation]


class GenerateResponse(BaseModel):
    model: str
    prompt: str = Field(description="the prompt; for a chat, the text its template rendered")
    text: str = Field(description="the continuation (without the prompt)")
    tokens: int
    finish_reason: Literal["stop", "length"]
    seed: int | None


class EmbedResponse(BaseModel):
    model: str
    dim: int
    vectors: list[list[float]]
    unknown: list[int] = Field(description="indices of the texts with pieces unknown to the vocabulary")


class Label(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    model: str
    results: list[Label]


class AttentionKind(BaseModel):
    kind: Literal["encoder", "decoder", "cross"]
    title: str
    queries: list[str]
    keys: list[str]
    weights: list[list[list[list[float]]]] = Field(description="[layer][head][query][key]")


class AttentionResponse(BaseModel):
    model: str
    title: str
    maps: list[AttentionKind]
    html: str | None = None


class ModelInfo(BaseModel):
    name: str
    family: str
    source: str
    capabilities: list[str]
    max_tokens: int | None = Field(description="tokens of one input the model takes")
    chat_template: bool = Field(False, description="generation models: whether /v1/generate takes messages")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    models: int
