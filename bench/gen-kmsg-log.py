#!/usr/bin/env python3
"""Writes a mixed kernel log in dmesg style: ~90 % ordinary kernel lines, ~10 % amdgpu/KFD lines
taken from the catalogue fixture. With BLOCK, the clock jumps 30 s every BLOCK lines, so the
GPU lines of each block form an incident of their own (else they all fall into one).
Usage: gen-kmsg-log.py LINES OUT [BLOCK]"""
import random
import sys

lines, out = int(sys.argv[1]), sys.argv[2]
block = int(sys.argv[3]) if len(sys.argv) > 3 else 0
random.seed(1151)
with open("tests/fixtures/kmsg/catalogue.dmesg.log") as f:
    gpu = [l.split("] ", 1)[1].rstrip("\n") for l in f if "] " in l]
other = [
    "usb 1-1: new high-speed USB device number %d using xhci_hcd",
    "EXT4-fs (nvme0n1p%d): mounted filesystem with ordered data mode",
    "audit: type=1400 audit(1722848604.%d:42): apparmor=\"STATUS\" operation=\"profile_load\"",
    "eth0: renamed from veth%d",
    "cni0: port %d(veth1234abcd) entered forwarding state",
    "IPv6: ADDRCONF(NETDEV_CHANGE): veth%d: link becomes ready",
    "systemd-journald[%d]: Received client request to flush runtime journal.",
    "nvme nvme0: %d/0/0 default/read/poll queues",
    "[drm] Initialized simpledrm %d.0.0 for simple-framebuffer.0 on minor 0",
    "kfd kfd: amdgpu: added device 1002:1586 with %d queues",
]
t = 1.0
with open(out, "w") as f:
    for i in range(lines):
        t += random.random() * 0.01
        if block and i % block == block - 1:
            t += 30.0
        if random.random() < 0.10:
            msg = random.choice(gpu)
        else:
            msg = random.choice(other) % (i % 1000)
        f.write("[%12.6f] %s\n" % (t, msg))
