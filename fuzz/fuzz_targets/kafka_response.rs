//! A broker's response bytes, decoded as each admin response the agent's second Kafka
//! client reads, at every version it may negotiate. Nothing may panic or abort.
#![no_main]

use foresight_decode::kafka::decode_response;
use kafka_protocol::messages::{
    ApiVersionsRequest, ConsumerGroupDescribeRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, DescribeProducersRequest,
    DescribeQuorumRequest, DescribeShareGroupOffsetsRequest, DescribeTopicPartitionsRequest,
    DescribeTransactionsRequest, FindCoordinatorRequest, ListGroupsRequest,
    ListTransactionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    ShareGroupDescribeRequest,
};
use kafka_protocol::protocol::Request;
use libfuzzer_sys::fuzz_target;

fn all_versions<R: Request>(data: &[u8]) {
    for v in R::VERSIONS.min..=R::VERSIONS.max {
        let _ = decode_response::<R>(bytes::Bytes::copy_from_slice(data), v, 1);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 16 {
        0 => all_versions::<ApiVersionsRequest>(body),
        1 => all_versions::<DescribeQuorumRequest>(body),
        2 => all_versions::<DescribeClusterRequest>(body),
        3 => all_versions::<DescribeConfigsRequest>(body),
        4 => all_versions::<DescribeProducersRequest>(body),
        5 => all_versions::<ListTransactionsRequest>(body),
        6 => all_versions::<DescribeTransactionsRequest>(body),
        7 => all_versions::<FindCoordinatorRequest>(body),
        8 => all_versions::<SaslHandshakeRequest>(body),
        9 => all_versions::<ListGroupsRequest>(body),
        10 => all_versions::<DescribeGroupsRequest>(body),
        11 => all_versions::<ConsumerGroupDescribeRequest>(body),
        12 => all_versions::<ShareGroupDescribeRequest>(body),
        13 => all_versions::<DescribeShareGroupOffsetsRequest>(body),
        14 => all_versions::<DescribeTopicPartitionsRequest>(body),
        _ => all_versions::<SaslAuthenticateRequest>(body),
    }
});
