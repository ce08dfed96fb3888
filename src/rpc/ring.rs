//! The `Ring` service between members, and the ring's messages on the
//! wire: each protocol [`Request`] and [`Response`] to and from protobuf,
//! validated (address syntax, list lengths) so that a malformed answer
//! counts as no answer.

use super::{
    member_from_pb, member_to_pb, members_from_pb, members_to_pb, pb, NodeApi, MAX_RING_MESSAGE,
};
use crate::id::Id;
#[cfg(test)]
use crate::ring::NodeRef;
use crate::ring::Request;
use crate::ring::Response;
use tonic::Status;

pub(super) fn find_reply(response: Response) -> pb::FindStepReply {
    use pb::find_step_reply::Answer;
    let answer = match response {
        Response::Found {
            predecessor,
            successors,
        } => Answer::Found(pb::Found {
            predecessor: Some(member_to_pb(&predecessor)),
            successors: members_to_pb(&successors),
        }),
        Response::Closer { candidates } => Answer::Closer(pb::Closer {
            candidates: members_to_pb(&candidates),
        }),
        _ => Answer::NotMember(pb::NotMember {}),
    };
    pb::FindStepReply {
        answer: Some(answer),
    }
}

pub(super) fn find_reply_from_pb(reply: pb::FindStepReply) -> Result<Response, Status> {
    use pb::find_step_reply::Answer;
    match reply.answer {
        Some(Answer::Found(found)) => {
            let successors = members_from_pb(found.successors, "successors")?;
            if successors.is_empty() {
                return Err(Status::invalid_argument("found without successors"));
            }
            Ok(Response::Found {
                predecessor: member_from_pb(found.predecessor, "predecessor")?,
                successors,
            })
        }
        Some(Answer::Closer(closer)) => Ok(Response::Closer {
            candidates: members_from_pb(closer.candidates, "candidates")?,
        }),
        Some(Answer::NotMember(_)) => Ok(Response::NotMember),
        None => Err(Status::invalid_argument("empty find-step answer")),
    }
}

pub(super) fn state_reply(response: Response) -> pb::StateReply {
    use pb::state_reply::Answer;
    let answer = match response {
        Response::State {
            predecessor,
            successors,
        } => Answer::State(pb::State {
            predecessor: predecessor.as_ref().map(member_to_pb),
            successors: members_to_pb(&successors),
        }),
        Response::Pending => Answer::Pending(pb::Pending {}),
        _ => Answer::NotMember(pb::NotMember {}),
    };
    pb::StateReply {
        answer: Some(answer),
    }
}

pub(super) fn state_reply_from_pb(reply: pb::StateReply) -> Result<Response, Status> {
    use pb::state_reply::Answer;
    match reply.answer {
        Some(Answer::State(state)) => Ok(Response::State {
            predecessor: state
                .predecessor
                .map(|p| member_from_pb(Some(p), "predecessor"))
                .transpose()?,
            successors: members_from_pb(state.successors, "successors")?,
        }),
        Some(Answer::Pending(_)) => Ok(Response::Pending),
        Some(Answer::NotMember(_)) => Ok(Response::NotMember),
        None => Err(Status::invalid_argument("empty state answer")),
    }
}

pub(super) fn ack(response: Response) -> pb::Ack {
    pb::Ack {
        member_known: response == Response::Ack,
    }
}

pub(super) fn ack_from_pb(ack: pb::Ack) -> Response {
    if ack.member_known {
        Response::Ack
    } else {
        Response::NotMember
    }
}

/// The ring service, between members.
pub struct RingService<N> {
    node: N,
}

impl<N: NodeApi> RingService<N> {
    pub fn server(node: N) -> pb::ring_server::RingServer<RingService<N>> {
        pb::ring_server::RingServer::new(RingService { node })
            .max_decoding_message_size(MAX_RING_MESSAGE)
    }
}

#[tonic::async_trait]
impl<N: NodeApi> pb::ring_server::Ring for RingService<N> {
    async fn find_step(
        &self,
        request: tonic::Request<pb::FindStepRequest>,
    ) -> Result<tonic::Response<pb::FindStepReply>, Status> {
        let target = Id(request.into_inner().target);
        let response = self
            .node
            .request(None, Request::FindStep { target })
            .await?;
        Ok(tonic::Response::new(find_reply(response)))
    }

    async fn get_state(
        &self,
        request: tonic::Request<pb::MemberRequest>,
    ) -> Result<tonic::Response<pb::StateReply>, Status> {
        let member = Id(request.into_inner().member);
        let response = self.node.request(Some(member), Request::GetState).await?;
        Ok(tonic::Response::new(state_reply(response)))
    }

    async fn notify(
        &self,
        request: tonic::Request<pb::NotifyRequest>,
    ) -> Result<tonic::Response<pb::Ack>, Status> {
        let request = request.into_inner();
        let from = member_from_pb(request.from, "from")?;
        let response = self
            .node
            .request(Some(Id(request.member)), Request::Notify { from })
            .await?;
        Ok(tonic::Response::new(ack(response)))
    }

    async fn leaving(
        &self,
        request: tonic::Request<pb::LeavingRequest>,
    ) -> Result<tonic::Response<pb::Ack>, Status> {
        let request = request.into_inner();
        let leaving = member_from_pb(request.leaving, "leaving")?;
        let response = self
            .node
            .request(Some(Id(request.member)), Request::Leaving { leaving })
            .await?;
        Ok(tonic::Response::new(ack(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::MAX_MEMBER_LIST;

    #[test]
    fn an_oversized_member_list_is_rejected() {
        let many = vec![
            pb::Member {
                id: 1,
                addr: "a:1".into()
            };
            MAX_MEMBER_LIST + 1
        ];
        let reply = pb::FindStepReply {
            answer: Some(pb::find_step_reply::Answer::Closer(pb::Closer {
                candidates: many,
            })),
        };
        assert_eq!(
            find_reply_from_pb(reply).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn a_found_without_successors_is_rejected() {
        let reply = pb::FindStepReply {
            answer: Some(pb::find_step_reply::Answer::Found(pb::Found {
                predecessor: Some(pb::Member {
                    id: 1,
                    addr: "a:1".into(),
                }),
                successors: vec![],
            })),
        };
        assert!(find_reply_from_pb(reply).is_err());
    }

    #[test]
    fn domain_answers_survive_the_round_trip() {
        let found = Response::Found {
            predecessor: NodeRef::new(Id(1), "a:1"),
            successors: vec![NodeRef::new(Id(2), "b:2"), NodeRef::new(Id(3), "c:3")],
        };
        assert_eq!(
            find_reply_from_pb(find_reply(found.clone())).unwrap(),
            found
        );
        let state = Response::State {
            predecessor: None,
            successors: vec![NodeRef::new(Id(9), "z:9")],
        };
        assert_eq!(
            state_reply_from_pb(state_reply(state.clone())).unwrap(),
            state
        );
        assert_eq!(
            state_reply_from_pb(state_reply(Response::Pending)).unwrap(),
            Response::Pending
        );
    }
}
