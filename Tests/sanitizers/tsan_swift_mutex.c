// Preloaded into the ThreadSanitizer build of kvd (scripts/sanitizers.sh): tells TSan about the
// lock hand-overs of Swift's Synchronization.Mutex that it cannot see on Linux.
//
// Why: Mutex's fast paths (an acquiring compare-exchange to lock, a releasing one to unlock) are
// inlined into kvd and instrumented, but under contention the lock changes hands in
// libswiftSynchronization.so, which is not instrumented: `_lockSlow` spins on an uninstrumented
// compare-exchange and then blocks in FUTEX_LOCK_PI, `_unlockSlow` hands the lock over with
// FUTEX_UNLOCK_PI in the kernel. TSan then sees no happens-before between one owner's critical
// section and the next, and reports contended accesses to Mutex-protected state (in kvd: the page
// free list, the staging allocator, the sequence table, the outbox) as races. Suppressing those
// reports would also hide real races on that state; instead these wrappers add exactly the edges a
// mutex implies — acquire on the futex word once `_lockSlow` / a successful `_tryLockSlow` returns,
// release before `_unlockSlow` — as TSan's own pthread_mutex interceptors do.
//
// The three functions are the exported slow paths of Synchronization's `_MutexHandle` (Swift 6.x
// on Linux): self (the address of the futex word) arrives in the swiftself register, so they are
// declared swiftcall with a swift_context parameter (clang lowers it to swiftself). Built with
// clang (the Swift toolchain's). scripts/sanitizers.sh checks the symbols still exist, so a
// renamed runtime fails loudly.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SWIFTCALL __attribute__((swiftcall))
#define SWIFT_SELF __attribute__((swift_context))  // lowered to LLVM swiftself (r13 on x86-64)
#define LOCK_SLOW "$s15Synchronization12_MutexHandleV9_lockSlowyys6UInt32VF"
#define TRYLOCK_SLOW "$s15Synchronization12_MutexHandleV12_tryLockSlowSbyF"
#define UNLOCK_SLOW "$s15Synchronization12_MutexHandleV11_unlockSlowyyF"

// Exported by the TSan runtime linked into kvd.
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);

typedef SWIFTCALL void (*lock_fn)(uint32_t, void *SWIFT_SELF);
typedef SWIFTCALL bool (*trylock_fn)(void *SWIFT_SELF);
typedef SWIFTCALL void (*unlock_fn)(void *SWIFT_SELF);

static void *next(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "tsan_swift_mutex: %s not found after this library\n", name);
        abort();
    }
    return f;
}

SWIFTCALL void lock_slow(uint32_t self_id, void *SWIFT_SELF self) __asm__(LOCK_SLOW);
SWIFTCALL void lock_slow(uint32_t self_id, void *SWIFT_SELF self) {
    static lock_fn real;
    if (!real) real = (lock_fn)next(LOCK_SLOW);
    real(self_id, self);
    __tsan_acquire(self);
}

SWIFTCALL bool trylock_slow(void *SWIFT_SELF self) __asm__(TRYLOCK_SLOW);
SWIFTCALL bool trylock_slow(void *SWIFT_SELF self) {
    static trylock_fn real;
    if (!real) real = (trylock_fn)next(TRYLOCK_SLOW);
    bool locked = real(self);
    if (locked) __tsan_acquire(self);
    return locked;
}

SWIFTCALL void unlock_slow(void *SWIFT_SELF self) __asm__(UNLOCK_SLOW);
SWIFTCALL void unlock_slow(void *SWIFT_SELF self) {
    static unlock_fn real;
    if (!real) real = (unlock_fn)next(UNLOCK_SLOW);
    __tsan_release(self);
    real(self);
}
