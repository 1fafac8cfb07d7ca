#!/usr/bin/env python3
"""Writes a verbose llama-server log of at least SIZE_MB megabytes: a real `-lv 4` start (the
captured fixture), then request after request at `-lv 4` (slot, timing and idle lines), with
llama.cpp's own `M.SS.mmm.uuu L` stamps rising. Deterministic.

usage: gen-llama-log.py SIZE_MB OUT
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
START = os.path.join(HERE, "..", "tests", "fixtures", "llama", "captured-cpu-lv4-serving.log")

REQUEST = [
    "I srv  params_from_: Chat format: Content-only",
    "I slot get_availabl: id  {slot} | task -1 | selected slot by LRU, t_last = {last}",
    "I slot launch_slot_: id  {slot} | task {task} | processing task, is_child = 0",
    "I slot update_slots: id  {slot} | task {task} | new prompt, n_ctx_slot = 8192, n_keep = 0, task.n_tokens = 412",
    "I slot update_slots: id  {slot} | task {task} | n_tokens = 0, memory_seq_rm [0, end)",
    "I slot update_slots: id  {slot} | task {task} | prompt processing progress, n_tokens = 412, batch.n_tokens = 412, progress = 1.000000",
    "I slot update_slots: id  {slot} | task {task} | prompt done, n_tokens = 412, batch.n_tokens = 412",
    "I slot print_timing: id  {slot} | task {task} | prompt eval time =     312.41 ms /   412 tokens (    0.76 ms per token,  1318.78 tokens per second)",
    "I slot print_timing: id  {slot} | task {task} |        eval time =    4102.77 ms /   256 tokens (   16.03 ms per token,    62.40 tokens per second)",
    "I slot print_timing: id  {slot} | task {task} |       total time =    4415.18 ms /   668 tokens",
    "I slot      release: id  {slot} | task {task} | stop processing: n_tokens = 667, truncated = 0",
    "I srv  update_slots: all slots are idle",
    "I srv  log_server_r: request: POST /v1/chat/completions 10.42.0.17 200",
]


def stamp(micros):
    minutes, rest = divmod(micros, 60_000_000)
    seconds, rest = divmod(rest, 1_000_000)
    millis, micro = divmod(rest, 1000)
    return "%d.%02d.%03d.%03d" % (minutes, seconds, millis, micro)


def main():
    size = int(sys.argv[1]) * 1_000_000
    out = sys.argv[2]
    with open(START, encoding="utf-8") as f:
        start = [l for l in f.read().splitlines() if "cleaning up before exit" not in l]
    written = 0
    with open(out, "w", encoding="utf-8") as f:
        for line in start:
            f.write(line + "\n")
            written += len(line) + 1
        micros = 60_000_000
        task = 1
        while written < size:
            for template in REQUEST:
                micros += 731
                line = stamp(micros) + " " + template.format(slot=task % 4, task=task, last=micros // 1000)
                f.write(line + "\n")
                written += len(line) + 1
            task += 1
            micros += 2_000_000


if __name__ == "__main__":
    main()
