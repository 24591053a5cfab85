"""The providers the gateway knows by prefix (SPEC §13), after Plano's supported-providers list.

A model is named ``<vendor>/<model id>``. The vendor prefix says how the gateway speaks to it:

* its *interface*: ``openai`` (Chat Completions at ``{prefix}/chat/completions``) or
  ``anthropic`` (Messages at ``{prefix}/messages``);
* its default host and *path prefix*, so ``base_url`` is optional where the vendor has a
  public endpoint;
* how the key is sent: ``Authorization: Bearer`` (most), ``x-api-key`` (Anthropic) or
  ``api-key`` (Azure OpenAI);
* quirks: Azure's deployment path and ``api-version`` query, Groq's and Gemini's OpenAI paths;
  for translated requests (SPEC §18), which vendors take ``max_completion_tokens`` (OpenAI,
  Azure OpenAI) and which need tool-call ids of 9 alphanumerics (Mistral).

A prefix that is not listed needs ``provider_interface`` (and a ``base_url``); a prefix that
Plano lists but this gateway cannot speak (Bedrock's Converse API, ChatGPT's subscription
login) is refused at start-up by name rather than half-served.

``base_url`` follows Plano's rule (:func:`resolve_prefix_url`): host only -> the vendor's
default path prefix is appended; with a path -> that path *is* the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

INTERFACE_OPENAI = "openai"
INTERFACE_ANTHROPIC = "anthropic"
INTERFACES = (INTERFACE_OPENAI, INTERFACE_ANTHROPIC)

AUTH_BEARER = "bearer"
AUTH_X_API_KEY = "x-api-key"
AUTH_API_KEY = "api-key"

#: Azure OpenAI's API version when the config does not name one.
DEFAULT_AZURE_API_VERSION = "2024-10-21"


@dataclass(frozen=True)
class Vendor:
    """What the gateway knows about one provider prefix."""

    interface: str
    #: ``scheme://host[:port]`` used when ``base_url`` is absent; ``None``: base_url required.
    default_host: str | None
    #: Appended to a host-only ``base_url`` (and to ``default_host``).
    path_prefix: str
    auth: str = AUTH_BEARER
    #: The vendor serves OpenAI's Responses API itself (``{prefix}/responses``).
    responses_native: bool = False
    #: Azure: the path prefix names the deployment (the model id) and an api-version is sent.
    azure: bool = False
    #: A translated Chat Completions request limits output with ``max_completion_tokens``
    #: (OpenAI's reasoning models and Azure deployments refuse ``max_tokens``).
    max_completion_tokens: bool = False
    #: Tool-call ids must be exactly 9 alphanumerics (Mistral refuses others): translated
    #: requests get stand-ins, restored in answers (:mod:`app.upstreams.tool_mapping`).
    nine_char_call_ids: bool = False
    #: The API takes OpenAI's ``prompt_cache_key`` (SPEC §19): the gateway sets it from the
    #: session. Only OpenAI and Azure OpenAI; others may reject an unknown field.
    prompt_cache_key: bool = False


VENDORS: dict[str, Vendor] = {
    "openai": Vendor(INTERFACE_OPENAI, "https://api.openai.com", "/v1", responses_native=True,
                     max_completion_tokens=True, prompt_cache_key=True),
    "anthropic": Vendor(INTERFACE_ANTHROPIC, "https://api.anthropic.com", "/v1",
                        auth=AUTH_X_API_KEY),
    "deepseek": Vendor(INTERFACE_OPENAI, "https://api.deepseek.com", "/v1"),
    "mistral": Vendor(INTERFACE_OPENAI, "https://api.mistral.ai", "/v1",
                      nine_char_call_ids=True),
    "groq": Vendor(INTERFACE_OPENAI, "https://api.groq.com", "/openai/v1"),
    "gemini": Vendor(INTERFACE_OPENAI, "https://generativelanguage.googleapis.com",
                     "/v1beta/openai"),
    "together_ai": Vendor(INTERFACE_OPENAI, "https://api.together.xyz", "/v1"),
    "xai": Vendor(INTERFACE_OPENAI, "https://api.x.ai", "/v1"),
    "moonshotai": Vendor(INTERFACE_OPENAI, "https://api.moonshot.ai", "/v1"),
    "zhipu": Vendor(INTERFACE_OPENAI, "https://open.bigmodel.cn", "/api/paas/v4"),
    "xiaomi": Vendor(INTERFACE_OPENAI, "https://api.xiaomimimo.com", "/v1"),
    # DashScope's OpenAI-compatible mode; the host is regional, so Plano requires base_url.
    "qwen": Vendor(INTERFACE_OPENAI, None, "/compatible-mode/v1"),
    "ollama": Vendor(INTERFACE_OPENAI, "http://localhost:11434", "/v1"),
    "azure_openai": Vendor(INTERFACE_OPENAI, None, "/openai/deployments/{model_id}",
                           auth=AUTH_API_KEY, azure=True, max_completion_tokens=True,
                           prompt_cache_key=True),
    # Plano's own routing models (Arch-Router, Plano-Orchestrator) behind an OpenAI server
    # you run: there is no public host to default to.
    "plano": Vendor(INTERFACE_OPENAI, None, "/v1"),
    # Plano's older name for the same (``arch/Arch-Router`` behind your own server).
    "arch": Vendor(INTERFACE_OPENAI, None, "/v1"),
}

#: Prefixes Plano knows that this gateway cannot speak, with the reason given at start-up.
UNSUPPORTED_VENDORS: dict[str, str] = {
    "amazon_bedrock": "Amazon Bedrock's Converse API is not an interface this gateway speaks",
    "chatgpt": "ChatGPT subscription login (Plano's chatgpt provider) is not supported",
}

#: ``provider_interface`` values accepted for a prefix the catalogue does not list. Plano's
#: own names for OpenAI-compatible vendors are taken as ``openai``, ``claude`` as
#: ``anthropic``.
PROVIDER_INTERFACES: dict[str, str] = {
    "openai": INTERFACE_OPENAI, "anthropic": INTERFACE_ANTHROPIC, "claude": INTERFACE_ANTHROPIC,
    "plano": INTERFACE_OPENAI, "deepseek": INTERFACE_OPENAI, "groq": INTERFACE_OPENAI,
    "mistral": INTERFACE_OPENAI, "xiaomi": INTERFACE_OPENAI, "gemini": INTERFACE_OPENAI,
    "digitalocean": INTERFACE_OPENAI, "vercel": INTERFACE_OPENAI,
    "openrouter": INTERFACE_OPENAI, "moonshotai": INTERFACE_OPENAI,
}


def custom_vendor(interface: str) -> Vendor:
    """The vendor of a prefix the catalogue does not list, spoken to with ``interface``."""
    auth = AUTH_X_API_KEY if interface == INTERFACE_ANTHROPIC else AUTH_BEARER
    return Vendor(interface, None, "/v1", auth=auth)


def resolve_prefix_url(vendor: Vendor, base_url: str | None, model_id: str) -> str:
    """The URL every endpoint path is appended to (no trailing slash), by Plano's rule.

    Host only (``http://localhost:11434``) -> host + the vendor's default path prefix
    (``/v1``); with a path (``https://proxy.example/ai/openai``) -> that path replaces the
    prefix. ``base_url`` absent -> the vendor's default host and prefix. For Azure the
    default prefix names the deployment: ``/openai/deployments/<model id>``.
    """
    if base_url is None:
        if vendor.default_host is None:
            raise ValueError("base_url is required for this provider")
        base_url = vendor.default_host
    parts = urlsplit(base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        path = vendor.path_prefix.format(model_id=model_id)
    return origin + path
