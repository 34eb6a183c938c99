/* libkvdclient conversions: dtype sizes, f16/bf16 <-> f32, kvd_param constructors. */
#include "internal.h"

#include <string.h>

size_t kvd_dtype_size(kvd_dtype dtype) {
    switch (dtype) {
    case KVD_DTYPE_F16: case KVD_DTYPE_BF16: return 2;
    case KVD_DTYPE_F32: return 4;
    default: return 0;
    }
}

uint16_t kvd_f32_to_f16(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    uint32_t sign = (f >> 16) & 0x8000u, exp = (f >> 23) & 0xffu, man = f & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        uint32_t m = man | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float kvd_f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {
            int e = 1;
            while (!(man & 0x400u)) { man <<= 1; e--; }
            f = sign | ((uint32_t)(e + 112) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (man << 13);
    } else {
        f = sign | ((exp + 112) << 23) | (man << 13);
    }
    float x;
    memcpy(&x, &f, 4);
    return x;
}

uint16_t kvd_f32_to_bf16(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    if ((f & 0x7f800000u) == 0x7f800000u && (f & 0x7fffffu)) return (uint16_t)((f >> 16) | 0x40u);
    f += 0x7fffu + ((f >> 16) & 1u);
    return (uint16_t)(f >> 16);
}

float kvd_bf16_to_f32(uint16_t h) {
    uint32_t f = (uint32_t)h << 16;
    float x;
    memcpy(&x, &f, 4);
    return x;
}

/* The fields every constructor shares; the union member is set by the caller. */
static kvd_param param_of(const char *name, kvd_param_type type) {
    kvd_param p;
    memset(&p, 0, sizeof p);
    p.name = name;
    p.type = type;
    return p;
}

kvd_param kvd_param_int(const char *name, int64_t v) {
    kvd_param p = param_of(name, KVD_PARAM_INT);
    p.value.i = v;
    return p;
}
kvd_param kvd_param_float(const char *name, double v) {
    kvd_param p = param_of(name, KVD_PARAM_FLOAT);
    p.value.f = v;
    return p;
}
kvd_param kvd_param_string(const char *name, const char *v) {
    kvd_param p = param_of(name, KVD_PARAM_STRING);
    p.value.s = v;
    return p;
}
kvd_param kvd_param_bool(const char *name, int v) {
    kvd_param p = param_of(name, KVD_PARAM_BOOL);
    p.value.b = v ? 1 : 0;
    return p;
}
