/* Reading a module image's static data size: ELF section headers, and the
 * fatbin container's entry headers. Every offset is checked against the
 * image's size where it is known, and against sane bounds where it is not. */
#include "hook/cubin.h"

#include <elf.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FATBIN_MAGIC 0xBA55ED50u
#define FATBIN_WRAPPER_MAGIC 0x466243B1u /* __fatBinC_Wrapper_t */
#define FATBIN_KIND_ELF 2
/* Headers of an image of unknown size are trusted up to this far. */
#define UNSIZED_LIMIT (1ull << 32)

struct fatbin_header {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size; /* offset of the first entry */
    uint64_t entries_size; /* bytes of entries after the header */
};

struct fatbin_entry {
    uint16_t kind;
    uint16_t unknown;
    uint32_t header_size; /* this entry's header; its payload follows */
    uint64_t payload_size;
};

struct fatbin_wrapper {
    uint32_t magic;
    uint32_t version;
    const void *data;
    const void *unused;
};

static bool counted_section(const char *name, const Elf64_Shdr *s)
{
    if (strcmp(name, ".nv.global") == 0 || strcmp(name, ".nv.global.init") == 0)
        return true;
    /* Constant banks of the module; bank 0 holds kernel parameters. */
    return strncmp(name, ".nv.constant", 12) == 0 &&
           strncmp(name, ".nv.constant0", 13) != 0 && s->sh_size > 0;
}

static bool fits(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static uint64_t elf_static_bytes(const unsigned char *p, uint64_t size)
{
    if (!fits(0, sizeof(Elf64_Ehdr), size) || memcmp(p, ELFMAG, SELFMAG) != 0 ||
        p[EI_CLASS] != ELFCLASS64)
        return 0;
    Elf64_Ehdr eh;
    memcpy(&eh, p, sizeof eh);
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
        eh.e_shstrndx >= eh.e_shnum ||
        !fits(eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr), size))
        return 0;
    Elf64_Shdr names;
    memcpy(&names, p + eh.e_shoff + (uint64_t)eh.e_shstrndx * sizeof names,
           sizeof names);
    if (!fits(names.sh_offset, names.sh_size, size) || names.sh_size == 0)
        return 0;
    const char *strtab = (const char *)p + names.sh_offset;
    uint64_t bytes = 0;
    for (unsigned i = 0; i < eh.e_shnum; i++) {
        Elf64_Shdr s;
        memcpy(&s, p + eh.e_shoff + (uint64_t)i * sizeof s, sizeof s);
        if (s.sh_name >= names.sh_size ||
            memchr(strtab + s.sh_name, '\0', names.sh_size - s.sh_name) == NULL)
            continue;
        if (counted_section(strtab + s.sh_name, &s))
            bytes += s.sh_size;
    }
    return bytes;
}

static uint64_t fatbin_static_bytes(const unsigned char *p, uint64_t size)
{
    struct fatbin_header h;
    if (!fits(0, sizeof h, size))
        return 0;
    memcpy(&h, p, sizeof h);
    if (h.magic != FATBIN_MAGIC || h.header_size < sizeof h ||
        !fits(h.header_size, h.entries_size, size))
        return 0;
    uint64_t end = h.header_size + h.entries_size, most = 0;
    for (uint64_t off = h.header_size; fits(off, sizeof(struct fatbin_entry), end);) {
        struct fatbin_entry e;
        memcpy(&e, p + off, sizeof e);
        if (e.header_size < sizeof e || !fits(off + e.header_size, e.payload_size, end))
            break;
        if (e.kind == FATBIN_KIND_ELF) { /* compressed ones fail the ELF check */
            uint64_t b = elf_static_bytes(p + off + e.header_size, e.payload_size);
            most = b > most ? b : most;
        }
        off += e.header_size + e.payload_size;
    }
    return most;
}

uint64_t cubin_static_bytes(const void *image, size_t size)
{
    if (image == NULL)
        return 0;
    uint64_t bound = size ? size : UNSIZED_LIMIT;
    uint32_t magic;
    memcpy(&magic, image, sizeof magic);
    if (magic == FATBIN_WRAPPER_MAGIC && size == 0) {
        struct fatbin_wrapper w;
        memcpy(&w, image, sizeof w);
        return w.data ? fatbin_static_bytes(w.data, UNSIZED_LIMIT) : 0;
    }
    if (magic == FATBIN_MAGIC)
        return fatbin_static_bytes(image, bound);
    return elf_static_bytes(image, bound);
}

uint64_t cubin_file_static_bytes(const char *path)
{
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return 0;
    struct stat st;
    uint64_t bytes = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 4) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            bytes = cubin_static_bytes(p, (size_t)st.st_size);
            munmap(p, (size_t)st.st_size);
        }
    }
    close(fd);
    return bytes;
}
