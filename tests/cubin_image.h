/* A tiny cubin for tests: an ELF64 image (EM_CUDA) with the sections a
 * module's static data lives in: .nv.global (NOBITS, `global` bytes),
 * .nv.global.init (4 KiB), a module constant bank .nv.constant3 (1 KiB) and
 * a kernel's parameter bank .nv.constant0 (not module data). Also a fatbin
 * container holding cubins for two architectures. */
#ifndef CUBIN_IMAGE_H
#define CUBIN_IMAGE_H

#include <elf.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CUBIN_INIT_BYTES 4096
#define CUBIN_CONST_BYTES 1024
#define CUBIN_EXTRA (CUBIN_INIT_BYTES + CUBIN_CONST_BYTES)

static inline void *cubin_build(uint64_t global, size_t *size)
{
    static const char names[] = "\0.shstrtab\0.nv.global\0.nv.global.init\0"
                                ".nv.constant3\0.nv.constant0._Z1kPf";
    enum { N_SHSTRTAB = 1, N_GLOBAL = 11, N_INIT = 22, N_CONST3 = 38,
           N_CONST0 = 52 };
    size_t off_names = sizeof(Elf64_Ehdr);
    size_t off_init = (off_names + sizeof names + 7) & ~(size_t)7;
    size_t off_const3 = off_init + CUBIN_INIT_BYTES;
    size_t off_const0 = off_const3 + CUBIN_CONST_BYTES;
    size_t off_sh = off_const0 + 352;
    *size = off_sh + 6 * sizeof(Elf64_Shdr);
    unsigned char *p = calloc(1, *size);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)p;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = 190; /* EM_CUDA */
    eh->e_version = EV_CURRENT;
    eh->e_ehsize = sizeof *eh;
    eh->e_shoff = off_sh;
    eh->e_shentsize = sizeof(Elf64_Shdr);
    eh->e_shnum = 6;
    eh->e_shstrndx = 1;
    memcpy(p + off_names, names, sizeof names);
    memset(p + off_init, 0x5a, CUBIN_INIT_BYTES);
    Elf64_Shdr *sh = (Elf64_Shdr *)(p + off_sh);
    sh[1] = (Elf64_Shdr){.sh_name = N_SHSTRTAB, .sh_type = SHT_STRTAB,
                         .sh_offset = off_names, .sh_size = sizeof names};
    sh[2] = (Elf64_Shdr){.sh_name = N_GLOBAL, .sh_type = SHT_NOBITS,
                         .sh_flags = SHF_ALLOC | SHF_WRITE,
                         .sh_offset = off_init, .sh_size = global};
    sh[3] = (Elf64_Shdr){.sh_name = N_INIT, .sh_type = SHT_PROGBITS,
                         .sh_flags = SHF_ALLOC | SHF_WRITE,
                         .sh_offset = off_init, .sh_size = CUBIN_INIT_BYTES};
    sh[4] = (Elf64_Shdr){.sh_name = N_CONST3, .sh_type = SHT_PROGBITS,
                         .sh_flags = SHF_ALLOC, .sh_offset = off_const3,
                         .sh_size = CUBIN_CONST_BYTES};
    sh[5] = (Elf64_Shdr){.sh_name = N_CONST0, .sh_type = SHT_PROGBITS,
                         .sh_flags = SHF_ALLOC, .sh_offset = off_const0,
                         .sh_size = 352};
    return p;
}

/* A fatbin container: one 64-byte entry header per cubin (kind 2 = ELF,
 * header size, payload size, architecture at byte 28), payloads 8-aligned. */
static inline void *fatbin_build(const uint64_t globals[2],
                                 const unsigned arch[2], size_t *size)
{
    size_t sz[2];
    void *cubin[2] = {cubin_build(globals[0], &sz[0]),
                      cubin_build(globals[1], &sz[1])};
    size_t pad[2] = {(sz[0] + 7) & ~(size_t)7, (sz[1] + 7) & ~(size_t)7};
    *size = 16 + 2 * 64 + pad[0] + pad[1];
    unsigned char *p = calloc(1, *size);
    uint32_t magic = 0xBA55ED50u;
    uint16_t version = 1, first = 16;
    uint64_t total = *size - 16;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &version, 2);
    memcpy(p + 6, &first, 2);
    memcpy(p + 8, &total, 8);
    size_t off = 16;
    for (int i = 0; i < 2; i++) {
        uint16_t kind = 2;
        uint32_t hsize = 64;
        uint64_t psize = pad[i];
        memcpy(p + off, &kind, 2);
        memcpy(p + off + 4, &hsize, 4);
        memcpy(p + off + 8, &psize, 8);
        memcpy(p + off + 28, &arch[i], 4);
        memcpy(p + off + 64, cubin[i], sz[i]);
        off += 64 + pad[i];
        free(cubin[i]);
    }
    return p;
}

#endif
