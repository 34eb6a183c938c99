// kvd_client.hpp — a header-only C++17 RAII wrapper over the kvd C API (example; the C API is
// the supported interface). Every failure throws kvd::Error with the code and the client's message.
// A Client is not thread-safe (one per thread), like the C client it wraps.
#pragma once

#include <kvd_client.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kvd {

class Error : public std::runtime_error {
public:
    Error(kvd_result code, const std::string &message)
        : std::runtime_error(std::string(kvd_result_name(code)) + ": " + message), code_(code) {}
    kvd_result code() const noexcept { return code_; }

private:
    kvd_result code_;
};

template <class T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};

using HelloInfo = std::unique_ptr<kvd_hello_info, Deleter<kvd_hello_info, kvd_hello_info_free>>;
using QueryResult = std::unique_ptr<kvd_query_result, Deleter<kvd_query_result, kvd_query_result_free>>;
using CompactResult =
    std::unique_ptr<kvd_compact_result, Deleter<kvd_compact_result, kvd_compact_result_free>>;
using Reservation = std::unique_ptr<kvd_reservation, Deleter<kvd_reservation, kvd_reservation_free>>;

class Client {
public:
    explicit Client(const std::string &endpoint, int timeout_ms = 5000,
                    const char *name = "kvd-cpp") {
        kvd_client_options o{};
        o.struct_size = sizeof o;
        o.timeout_ms = timeout_ms;
        o.client_name = name;
        char err[512] = {0};
        kvd_client *c = nullptr;
        kvd_result rc = kvd_client_connect(endpoint.c_str(), &o, &c, err, sizeof err);
        if (rc != KVD_OK) throw Error(rc, err);
        c_.reset(c);
    }

    kvd_client *get() const noexcept { return c_.get(); }

    HelloInfo hello() {
        kvd_hello_info *i = nullptr;
        check(kvd_client_hello(get(), &i));
        return HelloInfo(i);
    }

    uint64_t create_sequence(const std::string &model, const std::string &tenant = "") {
        uint64_t id = 0;
        check(kvd_client_create_sequence(get(), model.c_str(), 0, tenant.c_str(), &id));
        return id;
    }

    kvd_append_result append(uint64_t seq, kvd_dtype dt, uint32_t layers, uint32_t heads,
                             uint32_t tokens, uint32_t dim, const void *k, const void *v,
                             bool zero_copy = false) {
        kvd_append_result r{};
        check(zero_copy ? kvd_client_append_zero_copy(get(), seq, dt, layers, heads, tokens, dim, k, v, &r)
                        : kvd_client_append(get(), seq, dt, layers, heads, tokens, dim, k, v, &r));
        return r;
    }

    QueryResult query(uint64_t seq, kvd_query_mode mode = KVD_QUERY_PAGES) {
        kvd_query_result *q = nullptr;
        check(kvd_client_query(get(), seq, mode, nullptr, 0, &q));
        return QueryResult(q);
    }

    CompactResult compact(uint64_t seq, const std::string &method,
                          const std::vector<kvd_param> &params = {}) {
        kvd_compact_options o{};
        o.struct_size = sizeof o;
        o.method = method.c_str();
        o.params = params.data();
        o.num_params = params.size();
        kvd_compact_result *r = nullptr;
        check(kvd_client_compact(get(), seq, &o, &r));
        return CompactResult(r);
    }

    void release(uint64_t seq) { check(kvd_client_release(get(), seq, nullptr, nullptr)); }

    kvd_stats stats(uint64_t seq = 0) {
        kvd_stats s{};
        check(kvd_client_stats(get(), seq, &s));
        return s;
    }

    void check(kvd_result rc) const {
        if (rc != KVD_OK) throw Error(rc, kvd_client_last_error(get()));
    }

private:
    std::unique_ptr<kvd_client, Deleter<kvd_client, kvd_client_free>> c_;
};

// A sequence released when it goes out of scope (errors on release are ignored there).
class Sequence {
public:
    Sequence(Client &c, const std::string &model, const std::string &tenant = "")
        : c_(&c), id_(c.create_sequence(model, tenant)) {}
    Sequence(const Sequence &) = delete;
    Sequence &operator=(const Sequence &) = delete;
    Sequence(Sequence &&o) noexcept : c_(o.c_), id_(std::exchange(o.id_, 0)) {}
    ~Sequence() {
        if (id_) kvd_client_release(c_->get(), id_, nullptr, nullptr);
    }
    uint64_t id() const noexcept { return id_; }

private:
    Client *c_;
    uint64_t id_;
};

// Head `i` of a query result as contiguous K and V (copies).
inline std::pair<std::vector<uint8_t>, std::vector<uint8_t>> copy_head(const kvd_query_result &q,
                                                                       size_t i) {
    size_t need = kvd_query_head_bytes(&q, i);
    std::vector<uint8_t> k(need), v(need);
    kvd_result rc = kvd_query_copy_head(&q, i, k.data(), v.data(), need, nullptr);
    if (rc != KVD_OK) throw Error(rc, "kvd: copy_head failed");
    return {std::move(k), std::move(v)};
}

}  // namespace kvd
