/* dlsym for x86-64: see procaddr.c. A name that could be ours ("cu...",
 * "nvml...") is offered to vgpu_dlsym_hook; any other, or one we do not
 * hook, goes to glibc's dlsym by a jump, so that glibc still sees our
 * caller's return address (RTLD_NEXT stays relative to the caller).
 * The name test is done here, touching no instrumented code: sanitizer
 * runtimes call dlsym while they initialize.
 *
 * CET: dlsym is reached through the PLT (an indirect jump), so it starts
 * with endbr64 (a no-op on CPUs without IBT); its calls and returns pair
 * up and the tail jump is a jump, as the shadow stack wants. The linker
 * keeps IBT/SHSTK for libvgpu.so only if every object says it supports
 * them, so this one says so (note below) when the build asks for CET. */
        .text
        .globl  dlsym
        .type   dlsym, @function
        .p2align 4
dlsym:
        .cfi_startproc
        endbr64
        testq   %rsi, %rsi
        jz      .Lnext
        movzbl  (%rsi), %eax
        cmpb    $'c', %al
        jne     .Lnvml
        cmpb    $'u', 1(%rsi)
        je      .Lours
        jmp     .Lnext
.Lnvml:
        cmpb    $'n', %al
        jne     .Lnext
        cmpb    $'v', 1(%rsi)
        jne     .Lnext
        cmpb    $'m', 2(%rsi)
        jne     .Lnext
        cmpb    $'l', 3(%rsi)
        jne     .Lnext
.Lours:
        pushq   %rdi                    /* handle */
        .cfi_adjust_cfa_offset 8
        pushq   %rsi                    /* name */
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp                /* 16-byte alignment for the call */
        .cfi_adjust_cfa_offset 8
        movq    %rsi, %rdi
        call    vgpu_dlsym_hook@PLT
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        testq   %rax, %rax
        jz      .Lnext
        ret
.Lnext:
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    vgpu_dlsym_next@PLT     /* glibc's dlsym */
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        jmp     *%rax
        .cfi_endproc
        .size   dlsym, .-dlsym

#if defined(__CET__) && (__CET__ & 3) != 0
/* GNU property note: GNU_PROPERTY_X86_FEATURE_1_AND with the features the
 * build asks for (__CET__: 1 IBT, 2 SHSTK), as the compiler writes it for
 * C objects. */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size ("GNU\0") */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
        .long   4                       /* its data size */
        .long   (__CET__ & 3)
        .p2align 3
#endif
        .section .note.GNU-stack, "", @progbits
