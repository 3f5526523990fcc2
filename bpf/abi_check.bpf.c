// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Never loaded. Instantiates every ABI type so the compiled object's BTF
 * describes them as the BPF target lays them out; a unit test compares that
 * layout with the Rust bindings (Tetragon's alignchecker idea).
 */
#include "vmlinux/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "nettel/abi.h"

struct nt_event_hdr _nt_event_hdr __attribute__((used));
struct nt_tcp_retransmit_event _nt_tcp_retransmit_event __attribute__((used));
struct nt_synthetic_event _nt_synthetic_event __attribute__((used));
struct nt_http_event _nt_http_event __attribute__((used));
struct nt_http_key _nt_http_key __attribute__((used));
struct nt_http_totals _nt_http_totals __attribute__((used));
struct nt_http_slot _nt_http_slot __attribute__((used));

char LICENSE[] SEC("license") = "Dual BSD/GPL";
