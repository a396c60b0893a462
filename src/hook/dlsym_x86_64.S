/* dlsym for x86-64: see procaddr.c. A name that could be ours ("cu...",
 * "nvml...") is offered to vgpu_dlsym_hook; any other, or one we do not
 * hook, goes to glibc's dlsym by a jump, so that glibc still sees our
 * caller's return address (RTLD_NEXT stays relative to the caller).
 * The name test is done here, touching no instrumented code: sanitizer
 * runtimes call dlsym while they initialize. */
        .text
        .globl  dlsym
        .type   dlsym, @function
dlsym:
        .cfi_startproc
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
        .section .note.GNU-stack,"",@progbits
