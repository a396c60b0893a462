/* dlsym for aarch64 (Grace Hopper, Grace Blackwell): the same contract as
 * ../x86_64/dlsym.S. A name that could be ours ("cu...", "nvml...") is
 * offered to vgpu_dlsym_hook; any other, or one we do not hook, goes to
 * glibc's dlsym by a tail branch with x30 restored, so that glibc sees our
 * caller's return address (RTLD_NEXT stays relative to the caller). The
 * name test touches no instrumented code.
 *
 * Branch protection: dlsym starts with BTI c (a hint, a no-op on cores
 * without BTI) as the target of the PLT's indirect branch; the tail branch
 * goes through x16, which glibc's own BTI c landing pad accepts; x30 is
 * signed while it sits on the stack (PACIASP/AUTIASP, hints too). The
 * note below says so when the build asks for branch protection. */
#define BTI_C   hint #34
#define PACIASP hint #25
#define AUTIASP hint #29

        .text
        .globl  dlsym
        .type   dlsym, %function
        .p2align 4
dlsym:
        .cfi_startproc
        BTI_C
        cbz     x1, .Lnext
        ldrb    w9, [x1]
        cmp     w9, #'c'
        b.ne    .Lnvml
        ldrb    w9, [x1, #1]
        cmp     w9, #'u'
        b.eq    .Lours
        b       .Lnext
.Lnvml:
        cmp     w9, #'n'
        b.ne    .Lnext
        ldrb    w9, [x1, #1]
        cmp     w9, #'v'
        b.ne    .Lnext
        ldrb    w9, [x1, #2]
        cmp     w9, #'m'
        b.ne    .Lnext
        ldrb    w9, [x1, #3]
        cmp     w9, #'l'
        b.ne    .Lnext
.Lours:
        PACIASP
        .cfi_negate_ra_state
        stp     x29, x30, [sp, #-32]!
        .cfi_def_cfa_offset 32
        .cfi_offset 29, -32
        .cfi_offset 30, -24
        mov     x29, sp
        stp     x0, x1, [sp, #16]       /* handle, name */
        mov     x0, x1
        bl      vgpu_dlsym_hook
        mov     x9, x0
        ldp     x0, x1, [sp, #16]
        ldp     x29, x30, [sp], #32
        .cfi_restore 29
        .cfi_restore 30
        .cfi_def_cfa_offset 0
        AUTIASP
        .cfi_negate_ra_state
        cbz     x9, .Lnext
        mov     x0, x9
        ret
.Lnext:
        PACIASP
        .cfi_negate_ra_state
        stp     x29, x30, [sp, #-32]!
        .cfi_def_cfa_offset 32
        .cfi_offset 29, -32
        .cfi_offset 30, -24
        mov     x29, sp
        stp     x0, x1, [sp, #16]
        bl      vgpu_dlsym_next         /* glibc's dlsym */
        mov     x16, x0
        ldp     x0, x1, [sp, #16]
        ldp     x29, x30, [sp], #32
        .cfi_restore 29
        .cfi_restore 30
        .cfi_def_cfa_offset 0
        AUTIASP
        .cfi_negate_ra_state
        br      x16
        .cfi_endproc
        .size   dlsym, .-dlsym

#if defined(__ARM_FEATURE_BTI_DEFAULT) || defined(__ARM_FEATURE_PAC_DEFAULT)
/* GNU property note: GNU_PROPERTY_AARCH64_FEATURE_1_AND, 1 BTI, 2 PAC. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define VGPU_BTI 1
#else
#define VGPU_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define VGPU_PAC 2
#else
#define VGPU_PAC 0
#endif
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4
        .long   16
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .long   4
        .long   (VGPU_BTI | VGPU_PAC)
        .p2align 3
#endif
        .section .note.GNU-stack, "", %progbits
