#!/usr/bin/env python3
"""Runs the client snippets of README.md ("Clients") against a running aiserve.

    make run                                   # in another terminal
    .venv/bin/python tools/check-clients.py [--url http://127.0.0.1:8080]

The server must have the locations of conf/aiserve.conf (/v1/embeddings,
/v1/models, /embed and / (api=tei) on all-MiniLM-L6-v2, /predict, /ner).  Each call prints one line,
"ok" or "FAIL" with what went wrong; every client must return the same
vector for the same text as the openai client (within 1e-6).  Exits 1 when
a call fails.  The Python packages are those of tools/requirements.txt.
"""

import argparse
import sys
import warnings

TEXT = "Hello world!"
TEXTS = ["Hello world!", "A man is eating food."]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080",
                    help="the server (default %(default)s)")
    ap.add_argument("--api-key", default=None,
                    help="an aiserve API key, for metered locations")
    args = ap.parse_args()
    url = args.url.rstrip("/")
    key = args.api_key or "unused"
    warnings.simplefilter("ignore")     # the deprecation notices

    failed = []
    ref = {}

    def check(name, fn, want_len=384):
        try:
            v = fn()
        except Exception as e:          # a client's own exception types
            failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {str(e)[:300]}")
            return None
        if want_len is not None:
            v = [float(x) for x in v]
            if len(v) != want_len:
                failed.append(name)
                print(f"FAIL {name}: {len(v)} values, expected {want_len}")
                return None
            if "vec" in ref:
                diff = max(abs(a - b) for a, b in zip(v, ref["vec"]))
                if diff > 1e-6:
                    failed.append(name)
                    print(f"FAIL {name}: differs from openai's by {diff:g}")
                    return None
            else:
                ref["vec"] = v
        print(f"ok   {name}")
        return v

    # openai
    from openai import OpenAI
    client = OpenAI(base_url=f"{url}/v1", api_key=key)
    check("openai embeddings.create",
          lambda: client.embeddings.create(model="minilm", input=[TEXT])
          .data[0].embedding)

    # huggingface_hub
    from huggingface_hub import InferenceClient
    check("huggingface_hub feature_extraction",
          lambda: InferenceClient(model=f"{url}/embed", token=args.api_key)
          .feature_extraction(TEXT)[0])
    check("huggingface_hub token_classification",
          lambda: InferenceClient(model=f"{url}/ner", token=args.api_key)
          .token_classification("My name is Wolfgang")[0].word,
          want_len=None)

    # the routes these clients list models with and post to as to TEI
    check("openai models.list",
          lambda: [m.id for m in client.models.list()].index("minilm") >= 0,
          want_len=None)
    check("openai models.retrieve",
          lambda: client.models.retrieve("minilm").id == "minilm" or 1 / 0,
          want_len=None)
    from openai import NotFoundError
    try:
        client.embeddings.create(model="text-embedding-ada-002", input=[TEXT])
        failed.append("openai: a model not served")
        print("FAIL openai: a model not served was answered")
    except NotFoundError:
        print("ok   openai: a model not served is a 404")
    tei_root = InferenceClient(base_url=url, token=args.api_key)
    check("huggingface_hub feature_extraction (POST /, api=tei)",
          lambda: tei_root.feature_extraction(TEXT)[0])
    check("huggingface_hub sentence_similarity (POST /, api=tei)",
          lambda: tei_root.sentence_similarity(
              "A man is eating food.",
              ["A man is eating a piece of bread."])[0] > 0.5 or 1 / 0,
          want_len=None)
    check("huggingface_hub text_classification (POST /predict)",
          lambda: len(InferenceClient(base_url=f"{url}/predict",
                                      token=args.api_key)
                      .text_classification("I love this", top_k=2)) == 2
          or 1 / 0, want_len=None)

    # LangChain
    from langchain_openai import OpenAIEmbeddings
    emb = OpenAIEmbeddings(model="minilm", base_url=f"{url}/v1",
                           api_key=key, check_embedding_ctx_length=False)
    check("langchain OpenAIEmbeddings.embed_query",
          lambda: emb.embed_query(TEXT))
    check("langchain OpenAIEmbeddings.embed_documents",
          lambda: emb.embed_documents(TEXTS)[0])

    from langchain_community.embeddings import (
        HuggingFaceInferenceAPIEmbeddings)
    hf = HuggingFaceInferenceAPIEmbeddings(api_key=key,
                                           api_url=f"{url}/embed")
    check("langchain HuggingFaceInferenceAPIEmbeddings.embed_query",
          lambda: hf.embed_query(TEXT))

    # LlamaIndex
    from llama_index.embeddings.openai import OpenAIEmbedding
    li = OpenAIEmbedding(model_name="minilm", api_base=f"{url}/v1",
                         api_key=key)
    check("llama_index OpenAIEmbedding.get_text_embedding",
          lambda: li.get_text_embedding(TEXT))

    from llama_index.embeddings.text_embeddings_inference import (
        TextEmbeddingsInference)
    tei = TextEmbeddingsInference(model_name="minilm", base_url=url,
                                  auth_token=args.api_key)
    check("llama_index TextEmbeddingsInference.get_text_embedding",
          lambda: tei.get_text_embedding(TEXT))
    check("llama_index TextEmbeddingsInference.get_text_embedding_batch",
          lambda: tei.get_text_embedding_batch(TEXTS)[0])

    print(f"{len(failed)} failed" if failed else "all calls answered")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
