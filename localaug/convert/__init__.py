"""Hugging Face weights -> GGUF, in Python with the `gguf` library (no llama.cpp build needed).

Used by `localaug export` (a student leaves as a GGUF or a llama.cpp LoRA) and by the llama.cpp evaluation of a
student in a run (student/llamacpp_student.py), which is why it sits below both.

    arch.py       the architectures written as GGUF (gguf's tensor-name maps, llama.cpp's layouts)
    tokenizer.py  a GGUF's tokenizer and metadata (copied from the student's GGUF, or from tokenizer.json)
    gguf_kv.py    a GGUF's key-value fields read in one pass (what the copy reads)
    gguf_model.py a model as an f16 GGUF
    lora.py       an adapter as a llama.cpp LoRA GGUF
"""
