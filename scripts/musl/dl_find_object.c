/* _dl_find_object for wtpd's static musl builds (scripts/musl/link compiles it into each link).
 *
 * The unwinder in Debian's cross libgcc_eh.a (gcc 12, built for glibc 2.35 or later) finds
 * a frame's unwind table with glibc's _dl_find_object; musl has no such function, so a
 * static musl binary that links libgcc_eh fails with "undefined reference to
 * _dl_find_object". This is that function on top of dl_iterate_phdr (which musl has, for
 * static binaries too): the loaded object whose PT_LOAD segments hold `pc`, and its
 * PT_GNU_EH_FRAME (.eh_frame_hdr). Without it panics could not unwind (the unit tests need
 * that) and backtraces would be empty.
 *
 * The struct is glibc's (bits/dl_find_object.h): on ARM it carries dlfo_eh_count
 * (DLFO_STRUCT_HAS_EH_COUNT), on MIPS neither that nor dlfo_eh_dbase.
 */
#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>

struct dl_find_object {
    unsigned long long dlfo_flags;
    void *dlfo_map_start;
    void *dlfo_map_end;
    void *dlfo_link_map;
    void *dlfo_eh_frame;
#if defined(__arm__)
    int dlfo_eh_count;
    unsigned int dlfo_eh_count_pad;
#endif
    unsigned long long dlfo_reserved[7];
};

struct query {
    uintptr_t pc;
    struct dl_find_object *out;
    int found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    struct query *q = data;
    const ElfW(Phdr) *eh = NULL;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    int hit = 0;
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type == PT_LOAD) {
            uintptr_t start = info->dlpi_addr + p->p_vaddr, end = start + p->p_memsz;
            if (q->pc >= start && q->pc < end)
                hit = 1;
            if (start < lo)
                lo = start;
            if (end > hi)
                hi = end;
        } else if (p->p_type == PT_GNU_EH_FRAME) {
            eh = p;
        }
    }
    if (!hit)
        return 0;
    q->out->dlfo_flags = 0;
    q->out->dlfo_map_start = (void *)lo;
    q->out->dlfo_map_end = (void *)hi;
    q->out->dlfo_link_map = NULL;
    q->out->dlfo_eh_frame = eh ? (void *)(info->dlpi_addr + eh->p_vaddr) : NULL;
#if defined(__arm__)
    q->out->dlfo_eh_count = 0;
#endif
    q->found = 1;
    return 1;
}

int _dl_find_object(void *pc, struct dl_find_object *out)
{
    struct query q = { (uintptr_t)pc, out, 0 };
    dl_iterate_phdr(visit, &q);
    return q.found ? 0 : -1;
}
